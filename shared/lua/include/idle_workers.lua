-- idle_workers.lua: the idle-worker index, each worker's own doorbell, and the search for a
-- smaller idle worker that could run a class (what the `fit` policy holds a job back for).
--
-- A worker is idle from the claim that found nothing for it ('empty') until its next
-- successful claim, its deregistration, its operator state becoming paused or draining,
-- its re-registration or its death (the reaper). While idle it sits in idle:{service} for
-- each service it offers, scored by its size (idle_size), and its worker hash records the
-- services it is indexed under (`idle_in`, JSON) and the capabilities its empty claim used
-- (`idle_caps`), which are what it will claim with when woken. Each update is O(log n) per
-- offered service. wake:{worker} is the worker's own doorbell: Broker.wait_for_work blocks
-- on it beside the service doorbells, so a script can wake one chosen worker.

--- @include "common"
--- @include "keys"

-- A worker's size, the idle index's score: its largest GPU's memory in tenths of a GB, then
-- its cost per hour in thousandths (up to 999.999 per hour) as the tie-break. The memory of
-- its largest card bounds which jobs only it can run (a job needs its memory on one GPU);
-- between cards of equal memory the dearer one is the one to keep free. A CPU-only worker
-- has size 0 plus its cost: the smallest. shared/scheduling/fit.py computes the same.
local function idle_size(caps)
  local mem = 0
  for _, g in ipairs(caps.gpus) do
    local m = tonumber(val(g.memory_gb)) or 0
    if m > mem then mem = m end
  end
  local cost = math.min(math.max(math.floor((tonumber(caps.per_hour) or 0) * 1000), 0), 999999)
  return math.floor(mem * 10) * 1000000 + cost
end

-- Take `worker_id` out of the idle index and drop the wake-ups still waiting for it. Safe
-- to call for a worker that is not idle (one HGET).
local function clear_idle(worker_id)
  local worker_key = K.worker(worker_id)
  local indexed = redis.call('HGET', worker_key, 'idle_in')
  if not indexed then return end
  for _, svc in ipairs(cjson.decode(indexed)) do
    redis.call('ZREM', K.idle_workers(svc), worker_id)
  end
  redis.call('HDEL', worker_key, 'idle_in', 'idle_caps')
  redis.call('DEL', K.wake(worker_id))
end

-- `worker_id`'s claim found nothing: index it as idle under each service it offers (caps:
-- prepare_caps of `caps_json`). Only a registered, live worker is indexed, so a claim made
-- without registering (tests, tools) leaves no entry nobody would clean up.
local function mark_idle(worker_id, caps, caps_json, now)
  local alive = tonumber(redis.call('ZSCORE', K.workers, worker_id) or '')
  if not alive or alive < now then return end
  local worker_key = K.worker(worker_id)
  local before = redis.call('HGET', worker_key, 'idle_in')
  if before then
    -- Its services may have changed since: leave no entry under one it no longer offers.
    for _, svc in ipairs(cjson.decode(before)) do
      if not caps.service_set[svc] then redis.call('ZREM', K.idle_workers(svc), worker_id) end
    end
  end
  local size = int(idle_size(caps))
  for _, svc in ipairs(caps.services) do
    redis.call('ZADD', K.idle_workers(svc), size, worker_id)
  end
  -- An empty list encodes as {} in cjson; '[]' keeps the field's type one.
  local services = #caps.services > 0 and cjson.encode(caps.services) or '[]'
  redis.call('HSET', worker_key, 'idle_in', services, 'idle_caps', caps_json)
end
