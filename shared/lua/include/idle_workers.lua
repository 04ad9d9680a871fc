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
--
-- The warm index: an idle worker whose claims apply the `affinity` policy (the policy set
-- is a worker-side setting, so only its claim knows) also sits in warm:{service}:{model}
-- for each of the first WARM_INDEXED of its warm models, scored by its size, and its hash
-- records those models (`idle_warm`, JSON). A job that becomes claimable and prefers models
-- rings the doorbell of such a worker that has them all warm instead of the service's
-- (wake_warm), so the job is taken warm rather than by whichever idle worker wakes first.
-- Only workers with affinity on are indexed: a worker without it would claim by strict
-- order, and waking it for its warmth would buy nothing. Entries leave with the idle
-- index's (clear_idle) and when a worker is woken for its warmth (one wake-up per job).

--- @include "common"
--- @include "keys"
--- @include "matching"

-- Wake-up tokens one worker's doorbell holds at most: one is enough to wake it, a few more
-- cost a few spurious claims, never an unbounded list.
local WAKE_CAP = 4
-- WAKE_CAP as text, for redis.call (common.lua int).
local WAKE_CAP_TEXT = '4'

-- How many of a worker's warm models the warm index holds it under: a bound on what each
-- idle/busy transition writes, however many models a worker reports.
local WARM_INDEXED = 8

-- How many warm idle workers a job's wake-up examines: a constant, so a submission costs
-- O(log n + WARM_LOOK) however many workers idle.
local WARM_LOOK = 3

-- How many of the largest-but-smaller idle workers a fit check examines per class: a
-- constant, so the check costs O(log n + k) however many workers idle.
-- (Text, as redis.call takes it: common.lua int.)
local FIT_LOOK = '3'

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

-- Take `worker_id` out of the warm index: of warm:{svc}:{model} for each service in
-- `services` (a list) and each model its hash's idle_warm records (`idle_warm`: that
-- field where the caller read it in this call, false when absent; nil: read here).
local function clear_warm(worker_id, services, idle_warm)
  local worker_key = K.worker(worker_id)
  local warm = idle_warm
  if warm == nil then warm = redis.call('HGET', worker_key, 'idle_warm') end
  if not warm then return end
  for _, model in ipairs(cjson.decode(warm)) do
    for _, svc in ipairs(services) do
      redis.call('ZREM', K.warm_idle(svc, model), worker_id)
    end
  end
  redis.call('HDEL', worker_key, 'idle_warm')
end

-- Take `worker_id` out of the idle index (and the warm index) and drop the wake-ups still
-- waiting for it. Safe to call for a worker that is not idle (one HGET, none where the
-- caller passes its hash's `idle_in`, false when absent, read in the same script call;
-- likewise `idle_warm` for clear_warm).
local function clear_idle(worker_id, idle_in, idle_warm)
  local worker_key = K.worker(worker_id)
  local indexed = idle_in
  if indexed == nil then indexed = redis.call('HGET', worker_key, 'idle_in') end
  if not indexed then return end
  local services = cjson.decode(indexed)
  for _, svc in ipairs(services) do
    redis.call('ZREM', K.idle_workers(svc), worker_id)
  end
  clear_warm(worker_id, services, idle_warm)
  redis.call('HDEL', worker_key, 'idle_in', 'idle_caps', 'idle_handoff')
  -- Only wake-up tokens ('0') can be waiting here, never a handed job: a handoff takes the
  -- worker out of this index first, and only an 'empty' claim puts it back, which takes
  -- any handed job still waiting (handoff.lua's header gives the whole argument).
  redis.call('DEL', K.wake(worker_id))
end

-- `worker_id`'s claim found nothing: index it as idle under each service it offers (caps:
-- prepare_caps of `caps_json`), and, where its claims apply affinity (`affinity` true),
-- under the first WARM_INDEXED of its warm models too. Only a registered, live worker is
-- indexed, so a claim made without registering (tests, tools) leaves no entry nobody would
-- clean up. `handoff`: '1' (strict order) or '2' (scheduling policies on) where the worker
-- accepts a job handed to it while idle (handoff.lua), recorded as `idle_handoff`; nil: not.
local function mark_idle(worker_id, caps, caps_json, now, affinity, handoff)
  local alive = tonumber(redis.call('ZSCORE', K.workers, worker_id) or '')
  if not alive or alive < now then return end
  local worker_key = K.worker(worker_id)
  local f = redis.call('HMGET', worker_key, 'idle_in', 'idle_caps', 'idle_warm', 'idle_handoff')
  local before = f[1]
  local warm_wanted = affinity and #caps.warm_list > 0 and #caps.services > 0
  if before and f[2] == caps_json and (f[3] ~= false) == warm_wanted
      and f[4] == (handoff or false) then
    -- Idle already, indexed with these capabilities (so the same services, size and warm
    -- models), in the warm index as these claims want and accepting handoffs alike:
    -- nothing to update. An idle worker polling with the same capabilities writes
    -- nothing; a wake-up that took it out of the warm index (wake_warm) has it indexed
    -- again, and a handoff took it out of the idle index altogether (clear_idle).
    return
  end
  if before then
    -- Its services and warm models may have changed since: leave no entry under one it no
    -- longer offers or has warm.
    local was = cjson.decode(before)
    for _, svc in ipairs(was) do
      if not caps.service_set[svc] then redis.call('ZREM', K.idle_workers(svc), worker_id) end
    end
    clear_warm(worker_id, was)
    if not handoff then redis.call('HDEL', worker_key, 'idle_handoff') end
  end
  local size = int(idle_size(caps))
  for _, svc in ipairs(caps.services) do
    redis.call('ZADD', K.idle_workers(svc), size, worker_id)
  end
  -- An empty list encodes as {} in cjson; '[]' keeps the field's type one.
  local services = #caps.services > 0 and cjson.encode(caps.services) or '[]'
  if handoff then
    redis.call('HSET', worker_key, 'idle_in', services, 'idle_caps', caps_json,
      'idle_handoff', handoff)
  else
    redis.call('HSET', worker_key, 'idle_in', services, 'idle_caps', caps_json)
  end
  if warm_wanted then
    local warm = {}
    for i = 1, math.min(#caps.warm_list, WARM_INDEXED) do
      local model = caps.warm_list[i]
      warm[i] = model
      for _, svc in ipairs(caps.services) do
        redis.call('ZADD', K.warm_idle(svc, model), size, worker_id)
      end
    end
    redis.call('HSET', worker_key, 'idle_warm', cjson.encode(warm))
  end
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

-- What one script call learnt of idle workers (begin_idle_workers forgets it): the smaller
-- idle workers per service and claimant size, and each one's prepared capabilities and
-- leases, or false when its entry is stale. A claim checks several classes against the same
-- few workers, and reads and decodes each of them once.
local idle_smaller, idle_seen = {}, {}
local function begin_idle_workers()
  idle_smaller, idle_seen = {}, {}
end

-- The idle worker `worker_id` as smaller_idle_match needs it ({caps=, running=}), or false
-- when it no longer counts: its heartbeat lapsed (not reaped yet), it is paused or
-- draining, or its record is gone. The entry also holds what a handoff to it reads from
-- its hash (handoff.lua): `handoff` (idle_handoff, false: none), and what clear_idle takes
-- out, `idle_in` and `idle_warm` (false: none): the same HMGET, not three HGETs more.
local function idle_worker(worker_id, now)
  local known = idle_seen[worker_id]
  if known ~= nil then return known end
  local alive = tonumber(redis.call('ZSCORE', K.workers, worker_id) or '')
  local f = redis.call('HMGET', K.worker(worker_id), 'state', 'idle_caps', 'idle_handoff',
    'idle_in', 'idle_warm')
  local found = false
  if alive and alive >= now and f[2] and f[1] ~= 'paused' and f[1] ~= 'draining' then
    found = { caps = prepare_caps(f[2]), running = held_by(worker_id), handoff = f[3],
      idle_in = f[4], idle_warm = f[5] }
  end
  idle_seen[worker_id] = found
  return found
end

-- The ids of the FIT_LOOK largest idle workers of `svc` strictly smaller than `size`, the
-- largest first: one ZREVRANGEBYSCORE per service and size per call.
local function smaller_idle_ids(svc, size)
  local known = idle_smaller[svc]
  if not known or known.size ~= size then
    known = { size = size, ids = redis.call('ZREVRANGEBYSCORE', K.idle_workers(svc),
      '(' .. int(size), '-inf', 'LIMIT', '0', FIT_LOOK) }
    idle_smaller[svc] = known
  end
  return known.ids
end

-- An idle worker of `svc` strictly smaller than `size` that can run jobs of the class `doc`
-- ({s=, c=, r=}) now, or nil. Looks at the FIT_LOOK largest of the smaller ones only, the
-- largest first (the best fit among them): O(log n + FIT_LOOK). Strictly smaller, so two
-- workers of equal size never defer to each other. A stale entry (idle_worker) counts as
-- looked at but never blocks: it can only let the claimant take the job. Writes nothing
-- (peek.lua may call it).
local function smaller_idle_match(svc, doc, size, now)
  for _, id in ipairs(smaller_idle_ids(svc, size)) do
    local w = idle_worker(id, now)
    if w and not mismatch(doc.s, doc.c, doc.r, w.caps, w.running) then return id end
  end
  return nil
end

-- Wake `worker_id` for a job held back for it. It stays in the index until its own claim
-- (taking a job clears it, finding none indexes it again): a claim by the big worker right
-- after this one (woken by a doorbell, or at the end of its idle poll)
-- must leave the job to it too, or it would race the worker it just woke. Its token
-- carries no hops: a worker woken for one job does not pass the wake-up on; tokens left
-- over are dropped by its next successful claim (clear_idle).
local function ring_worker(worker_id)
  local key = K.wake(worker_id)
  if redis.call('LPUSH', key, '0') > WAKE_CAP then redis.call('LTRIM', key, 0, WAKE_CAP - 1) end
end

-- The smallest idle worker of `svc` with every one of `models` (a non-empty list) warm
-- that can run a job of `customer` with requirements `req` (decoded, or its JSON, decoded
-- only once a warm worker is found) now, and its idle_worker entry; nil when none. Looks at
-- the WARM_LOOK smallest of warm:{svc}:{first model} only: O(log n + WARM_LOOK). Stale
-- entries are passed over.
-- Shared by the warm wake-up and the handoff (handoff.lua), so both pick the same worker.
local function warm_idle_worker(svc, customer, req, models, now)
  for _, id in ipairs(redis.call('ZRANGE', K.warm_idle(svc, models[1]), 0, WARM_LOOK - 1)) do
    local w = idle_worker(id, now)
    if w then
      local warm = true
      for _, m in ipairs(models) do
        if not w.caps.warm[m] then warm = false; break end
      end
      if warm then
        if type(req) == 'string' then req = cjson.decode(req) end
        if not mismatch(svc, customer, req, w.caps, w.running) then return id, w end
      end
    end
  end
  return nil
end

-- A job of service `svc` and customer `customer` with requirements `req_json` (JSON) that
-- prefers `models` (a non-empty list) became claimable: ring the doorbell of the idle
-- worker warm_idle_worker finds (the smallest with them all warm that can run it now; a
-- stale entry is passed over, never woken). The woken worker leaves the warm index (not the
-- idle index, so the fit policy still counts it until its claim), so the next such job
-- wakes another warm worker rather than queueing behind this one. Returns the woken
-- worker's id, or nil: the caller rings the service's doorbell then.
local function wake_warm(svc, customer, req_json, models, now)
  if #models == 0 then return nil end
  local id, w = warm_idle_worker(svc, customer, req_json, models, now)
  if not id then return nil end
  -- idle_in and idle_warm as idle_worker read them in this call.
  clear_warm(id, w.idle_in and cjson.decode(w.idle_in) or {}, w.idle_warm)
  ring_worker(id)
  return id
end
