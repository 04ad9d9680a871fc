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
--- @include "matching"

-- Wake-up tokens one worker's doorbell holds at most: one is enough to wake it, a few more
-- cost a few spurious claims, never an unbounded list.
local WAKE_CAP = 4

-- How many of the largest-but-smaller idle workers a fit check examines per class: a
-- constant, so the check costs O(log n + k) however many workers idle.
local FIT_LOOK = 3

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

-- The leases `worker_id` holds, as {customer=, isolation=} entries for mismatch (the lease
-- format is in leases.lua).
local function held_by(worker_id)
  local out = {}
  local flat = redis.call('HGETALL', K.leases(worker_id))
  for i = 2, #flat, 2 do
    local f = split(flat[i], '|')
    out[#out + 1] = { customer = f[2] or '', isolation = f[3] or 'none' }
  end
  return out
end

-- What one script call learnt of idle workers (top-level locals are made afresh by every
-- call): the smaller idle workers per service and claimant size, and each one's prepared
-- capabilities and leases, or false when its entry is stale. A claim checks several classes
-- against the same few workers, and reads and decodes each of them once.
local idle_smaller, idle_seen = {}, {}

-- The idle worker `worker_id` as smaller_idle_match needs it ({caps=, running=}), or false
-- when it no longer counts: its heartbeat lapsed (not reaped yet), it is paused or
-- draining, or its record is gone.
local function idle_worker(worker_id, now)
  local known = idle_seen[worker_id]
  if known ~= nil then return known end
  local alive = tonumber(redis.call('ZSCORE', K.workers, worker_id) or '')
  local f = redis.call('HMGET', K.worker(worker_id), 'state', 'idle_caps')
  local found = false
  if alive and alive >= now and f[2] and f[1] ~= 'paused' and f[1] ~= 'draining' then
    found = { caps = prepare_caps(f[2]), running = held_by(worker_id) }
  end
  idle_seen[worker_id] = found
  return found
end

-- An idle worker of `svc` strictly smaller than `size` that can run jobs of the class `doc`
-- ({s=, c=, r=}) now, or nil. Looks at the FIT_LOOK largest of the smaller ones only, the
-- largest first (the best fit among them): O(log n + FIT_LOOK). Strictly smaller, so two
-- workers of equal size never defer to each other. A stale entry (idle_worker) counts as
-- looked at but never blocks: it can only let the claimant take the job. Writes nothing
-- (peek.lua may call it).
local function smaller_idle_match(svc, doc, size, now)
  local known = idle_smaller[svc]
  if not known or known.size ~= size then
    known = { size = size, ids = redis.call('ZREVRANGEBYSCORE', K.idle_workers(svc),
      '(' .. int(size), '-inf', 'LIMIT', 0, FIT_LOOK) }
    idle_smaller[svc] = known
  end
  local ids = known.ids
  for _, id in ipairs(ids) do
    local w = idle_worker(id, now)
    if w and not mismatch(doc.s, doc.c, doc.r, w.caps, w.running) then return id end
  end
  return nil
end

-- Wake `worker_id` for a job held back for it. It stays in the index until its own claim
-- (taking a job clears it, finding none indexes it again): a claim by the big worker right
-- after this one (a worker whose complete-and-claim found nothing claims again at once)
-- must leave the job to it too, or it would race the worker it just woke. Its token
-- carries no hops: a worker woken for one job does not pass the wake-up on; tokens left
-- over are dropped by its next successful claim (clear_idle).
local function ring_worker(worker_id)
  local key = K.wake(worker_id)
  if redis.call('LPUSH', key, '0') > WAKE_CAP then redis.call('LTRIM', key, 0, WAKE_CAP - 1) end
end
