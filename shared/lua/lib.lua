-- lib.lua: helpers prepended to every script (see shared/scripts.py).
--
-- Common calling convention of every emp-redis script:
--   KEYS[1]  the pool's `jobs:pending` key. Scripts touch more keys than they declare: all of
--            them are built from the prefix, so with a {hash-tag} prefix they share KEYS[1]'s
--            Redis Cluster slot.
--   ARGV[1]  key prefix (may be empty)
--   ARGV[2]  approximate cap of the `events` stream (XADD MAXLEN ~)
--   ARGV[3]  retention of finished jobs, ms (job hash TTL, idempotency keys)
--   ARGV[4..] script-specific, documented in each script's header.
-- Times are Redis server time (TIME) in ms, so hubs and workers never compare clocks.

local P = ARGV[1]
local EVENTS_MAX = ARGV[2]
local RETENTION_MS = tonumber(ARGV[3])

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as strings without exponent notation (Lua numbers are doubles).
local function int(x)
  return string.format('%.0f', x)
end

local function val(x)
  if x == cjson.null then return nil end
  return x
end

local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

local function set_of(list)
  local s = {}
  if type(list) == 'table' then
    for _, v in ipairs(list) do s[v] = true end
  end
  return s
end

-- ---------------------------------------------------------------------------------------
-- Matching: the same rules as shared/matching.py (the specification).

local function tokens(s)
  local out = {}
  for w in string.gmatch(string.lower(s), '[a-z0-9]+') do out[#out + 1] = w end
  return out
end

local function model_matches(want, name)
  local w = tokens(want)
  local h = tokens(name)
  if #w == 0 then return true end
  for i = 1, #h - #w + 1 do
    local ok = true
    for j = 1, #w do
      if h[i + j - 1] ~= w[j] then ok = false; break end
    end
    if ok then return true end
  end
  return false
end

local function version(s)
  if type(s) ~= 'string' then return nil end
  local a, b = string.match(s, '^(%d+)%.(%d+)$')
  if not a then return nil end
  return tonumber(a), tonumber(b)
end

local function gpu_fits(g, want)
  local mem = val(want.memory_gb)
  if mem and (val(g.memory_gb) or 0) < mem then return false end
  local model = val(want.model)
  if model and not model_matches(model, val(g.name) or '') then return false end
  local cc = val(want.compute_capability)
  if cc then
    local hm, hn = version(val(g.compute_capability))
    local nm, nn = version(cc)
    if not hm or not nm then return false end
    if hm < nm or (hm == nm and hn < nn) then return false end
  end
  return true
end

-- Decode a worker's capability document once per call, with sets for membership tests.
local function prepare_caps(json)
  local c = cjson.decode(json)
  local hw = val(c.hardware) or {}
  local acc = val(c.customer_access) or {}
  local perf = val(c.performance) or {}
  local geo = val(c.geographic) or {}
  local cost = val(c.cost) or {}
  return {
    services = val(c.services) or {},
    service_set = set_of(val(c.services)),
    gpus = val(hw.gpus) or {},
    cpu_cores = val(hw.cpu_cores) or 0,
    ram_gb = val(hw.ram_gb) or 0,
    models = set_of(val(c.models)),
    isolation = val(acc.isolation) or 'none',
    allowed = set_of(val(acc.allowed_customers)),
    allowed_list = val(acc.allowed_customers) or {},
    denied = set_of(val(acc.denied_customers)),
    quality = set_of(val(perf.quality_levels)),
    region = val(geo.region),
    compliance = set_of(val(geo.compliance)),
    per_hour = val(cost.per_hour) or 0,
  }
end

-- Leases a worker holds, as {customer=, isolation=} entries (for customer isolation).
local function running_of(lease_key)
  local out = {}
  local flat = redis.call('HGETALL', lease_key)
  for i = 2, #flat, 2 do
    local f = split(flat[i], '|')
    out[#out + 1] = { customer = f[2] or '', isolation = f[3] or 'none' }
  end
  return out
end

-- nil when the worker can run jobs of this class now, else a short reason.
local function mismatch(svc, customer, req, caps, running)
  if not caps.service_set[svc] then return 'service' end
  local hw = val(req.hardware)
  if hw then
    local gpu = val(hw.gpu)
    if gpu then
      local fitting = 0
      for _, g in ipairs(caps.gpus) do
        if gpu_fits(g, gpu) then fitting = fitting + 1 end
      end
      if fitting < (val(gpu.count) or 1) then return 'gpu' end
    end
    local cores = val(hw.cpu_cores)
    if cores and caps.cpu_cores < cores then return 'cpu_cores' end
    local ram = val(hw.ram_gb)
    if ram and caps.ram_gb < ram then return 'ram_gb' end
  end
  for _, m in ipairs(val(req.models) or {}) do
    if not caps.models[m] then return 'models' end
  end
  local perf = val(req.performance)
  if perf and val(perf.quality) and not caps.quality[perf.quality] then return 'quality' end
  local geo = val(req.geographic)
  if geo then
    local region = val(geo.region)
    if region and region ~= caps.region then return 'region' end
    for _, c in ipairs(val(geo.compliance) or {}) do
      if not caps.compliance[c] then return 'compliance' end
    end
  end
  local cost = val(req.cost)
  if cost and val(cost.max_per_hour) and caps.per_hour > cost.max_per_hour then return 'cost' end
  if caps.isolation == 'strict' and not caps.allowed[customer] then return 'customer' end
  if caps.isolation == 'loose' and caps.denied[customer] then return 'customer' end
  local wanted = val(req.customer_isolation) or 'none'
  if wanted == 'strict' and caps.isolation ~= 'strict' then return 'isolation' end
  for _, r in ipairs(running) do
    if r.customer ~= customer then
      if r.isolation == 'loose' then return 'loose_lock' end
      if wanted == 'loose' then return 'loose' end
    end
  end
  return nil
end

-- ---------------------------------------------------------------------------------------
-- Queue structure: a pending, claimable job sits in its class ZSET; each class sits in
-- classes:{service} and classes:{service}:{customer}, scored by its best (lowest) job score.

local function class_doc(class_id)
  return cjson.decode(redis.call('HGET', P .. 'classes', class_id))
end

-- Re-score a class in its service indexes after its head changed; drop it when empty.
local function refresh_class(class_id, svc, customer)
  local head = redis.call('ZRANGE', P .. 'class:' .. class_id, 0, 0, 'WITHSCORES')
  local by_service = P .. 'classes:' .. svc
  local by_customer = by_service .. ':' .. customer
  if head[1] then
    redis.call('ZADD', by_service, head[2], class_id)
    redis.call('ZADD', by_customer, head[2], class_id)
  else
    redis.call('ZREM', by_service, class_id)
    redis.call('ZREM', by_customer, class_id)
    redis.call('HDEL', P .. 'classes', class_id)
  end
end

-- Make a pending job claimable (submit, retry, release, promotion of a due retry). The
-- class document is (re)written here because an emptied class drops its document while
-- a retry of one of its jobs may still be backing off. Returns the job's service.
local function enqueue_in_class(job_id, score, class_id, svc, customer, requirements)
  redis.call('ZADD', P .. 'class:' .. class_id, score, job_id)
  local by_service = P .. 'classes:' .. svc
  local best = redis.call('ZSCORE', by_service, class_id)
  if not best then
    redis.call('HSETNX', P .. 'classes', class_id, '{"s":' .. cjson.encode(svc) .. ',"c":'
      .. cjson.encode(customer) .. ',"r":' .. requirements .. '}')
  end
  if not best or tonumber(best) > tonumber(score) then
    redis.call('ZADD', by_service, score, class_id)
    redis.call('ZADD', by_service .. ':' .. customer, score, class_id)
  end
  return svc
end

local function enqueue_claimable(job_key, job_id)
  local f = redis.call('HMGET', job_key, 'score', 'class_id', 'service_type', 'customer_id',
    'requirements')
  return enqueue_in_class(job_id, f[1], f[2], f[3], f[4] or '', f[5])
end

-- Ring the service's doorbell so one idle worker wakes; `hops` is how often a worker that
-- cannot use the wake-up passes it on. The list is capped: tokens nobody waits for expire
-- into at most 64 spurious claims.
local function notify(svc, hops, count)
  local key = P .. 'notify:' .. svc
  local tokens = {}
  for i = 1, math.min(count or 1, 64) do tokens[i] = hops end
  if redis.call('LPUSH', key, unpack(tokens)) > 64 then redis.call('LTRIM', key, 0, 63) end
end

local function bump_stat(now, field, by)
  local key = P .. 'stats:' .. int(math.floor(now / 60000))
  if redis.call('HINCRBY', key, field, by or 1) == (by or 1) then
    redis.call('EXPIRE', key, 86400)
  end
end

-- Append a job event to the stream; per-job `seq` orders a job's events without gaps.
-- A caller that already knows them passes `seq` (having stored it as event_seq) and
-- `customer`, saving two reads of the job hash.
local function emit(job_key, job_id, etype, data, seq, customer)
  seq = seq or redis.call('HINCRBY', job_key, 'event_seq', 1)
  customer = customer or redis.call('HGET', job_key, 'customer_id') or ''
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'job', 'type', etype, 'job', job_id, 'seq', seq, 'customer', customer,
    'data', cjson.encode(data))
end

local function emit_worker(worker_id, etype, data)
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'worker', 'type', etype, 'worker', worker_id, 'data', cjson.encode(data))
end

-- Finish a job for good: status, timestamps, registry, retention TTL.
local function finish(job_key, job_id, status, now)
  redis.call('HSET', job_key, 'status', status, 'finished_at', int(now))
  redis.call('HDEL', job_key, 'token', 'retry_at')
  redis.call('ZREM', P .. 'jobs:active', job_id)
  redis.call('ZADD', P .. 'jobs:' .. status, now, job_id)
  redis.call('PEXPIRE', job_key, RETENTION_MS)
end

-- Take a job out of every pending structure (claimable or backing off).
local function unqueue(job_key, job_id)
  local f = redis.call('HMGET', job_key, 'class_id', 'service_type', 'customer_id')
  redis.call('ZREM', P .. 'jobs:pending', job_id)
  redis.call('ZREM', P .. 'jobs:delayed', job_id)
  if redis.call('ZREM', P .. 'class:' .. f[1], job_id) == 1 then
    refresh_class(f[1], f[2], f[3] or '')
  end
end

-- Back to pending after a failure or a lost lease, or failed for good once `max_retries`
-- retries are used up. Backoff is exponential with jitter: base * 2^(attempts-1), capped,
-- times [0.5, 1.0). The worker that failed is avoided until `avoid_ms` after the job is due
-- again, so another capable worker gets it first; it is not banned. Returns 'retrying' or
-- 'failed'.
local function retry_or_fail(job_key, job_id, now, err, base_ms, cap_ms, jitter, avoid_worker, avoid_ms)
  local f = redis.call('HMGET', job_key, 'attempts', 'max_retries', 'score')
  local attempts = tonumber(f[1] or '0') + 1
  redis.call('HSET', job_key, 'attempts', attempts, 'error', err)
  redis.call('HDEL', job_key, 'token')
  redis.call('ZREM', P .. 'jobs:active', job_id)
  if attempts > tonumber(f[2] or '0') then
    finish(job_key, job_id, 'failed', now)
    bump_stat(now, 'failed')
    emit(job_key, job_id, 'failed', { error = err, attempts = attempts })
    return 'failed'
  end
  local delay = base_ms * (2 ^ (attempts - 1))
  if delay > cap_ms then delay = cap_ms end
  delay = math.floor(delay * (0.5 + 0.5 * jitter))
  redis.call('HSET', job_key, 'status', 'pending', 'progress', '0', 'message', '',
    'avoid_worker', avoid_worker, 'avoid_until', int(now + delay + avoid_ms))
  redis.call('ZADD', P .. 'jobs:pending', f[3], job_id)
  if delay > 0 then
    redis.call('HSET', job_key, 'retry_at', int(now + delay))
    redis.call('ZADD', P .. 'jobs:delayed', now + delay, job_id)
  else
    notify(enqueue_claimable(job_key, job_id), 3)
  end
  bump_stat(now, 'retried')
  emit(job_key, job_id, 'retrying', { error = err, attempts = attempts, delay_ms = delay })
  return 'retrying'
end

-- Move retries whose backoff has elapsed into their classes (bounded per call).
local function promote_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', P .. 'jobs:delayed', '-inf', now, 'LIMIT', 0, limit)
  for _, job_id in ipairs(due) do
    local job_key = P .. 'job:' .. job_id
    redis.call('ZREM', P .. 'jobs:delayed', job_id)
    if redis.call('HGET', job_key, 'status') == 'pending' then
      redis.call('HDEL', job_key, 'retry_at')
      notify(enqueue_claimable(job_key, job_id), 3)
    end
  end
  return #due
end

-- Does `worker_id` hold the job under `token` (status active, same owner, same token)?
local function holds(job_key, worker_id, token)
  local f = redis.call('HMGET', job_key, 'status', 'worker_id', 'token')
  return f[1] == 'active' and f[2] == worker_id and f[3] == token, f[1]
end

-- Return an active job to pending without an attempt penalty (graceful stop, lost claim
-- reply). The caller has checked that `worker_id` holds it and removes the lease itself.
local function put_back(job_key, job_id, worker_id, reason)
  redis.call('HSET', job_key, 'status', 'pending', 'progress', '0', 'message', '')
  redis.call('HDEL', job_key, 'token')
  redis.call('ZREM', P .. 'jobs:active', job_id)
  redis.call('ZADD', P .. 'jobs:pending', redis.call('HGET', job_key, 'score'), job_id)
  notify(enqueue_claimable(job_key, job_id), 3)
  emit(job_key, job_id, 'released', { worker_id = worker_id, reason = reason })
end

-- Fencing: the lease record the worker must still hold. Returns the job key, or nil and
-- the reason ('stale' or the job's terminal status, e.g. 'cancelled').
local function fenced(worker_id, job_id, token)
  local job_key = P .. 'job:' .. job_id
  local lease = redis.call('HGET', P .. 'jobs:active:' .. worker_id, job_id)
  if not lease or split(lease, '|')[1] ~= token then return nil, 'stale' end
  local held, status = holds(job_key, worker_id, token)
  if held then return job_key, nil end
  -- The worker still holds a lease on a job that was cancelled: drop the lease now that
  -- the worker has reported back.
  redis.call('HDEL', P .. 'jobs:active:' .. worker_id, job_id)
  if status == 'cancelled' then return nil, 'cancelled' end
  return nil, 'stale'
end

-- Add one job (submit.lua, submit_batch.lua) at server time `now`; its hash fields are
-- ARGV[first..last] as name, value pairs. Returns {1, job_id, created_at_ms, queue_position}
-- when created, or {0, existing_job_id} when the id or idempotency key already names a job
-- (nothing is written then), and the job's service when created. The caller rings the
-- service's doorbell and counts the submission (once per batch). The score
-- (1000 - priority) * 2^43 + seq is an exact integer in a double: higher priority first,
-- then submission order, where seq comes from one Redis counter, so equal priorities are
-- FIFO even within one millisecond.
local function submit_job(job_id, idem, class_id, priority, first, last, now)
  if idem ~= '' then
    local existing = redis.call('GET', P .. 'idem:' .. idem)
    if existing and redis.call('EXISTS', P .. 'job:' .. existing) == 1 then
      return { 0, existing }
    end
  end
  local job_key = P .. 'job:' .. job_id
  if redis.call('EXISTS', job_key) == 1 then return { 0, job_id } end

  local seq = redis.call('INCR', P .. 'jobs:seq')
  local score = int((1000 - tonumber(priority)) * 8796093022208 + seq)
  -- event_seq starts at 1: the 'accepted' event below is the job's first.
  local fields = { 'id', job_id, 'status', 'pending', 'created_at', int(now), 'seq', seq,
    'score', score, 'class_id', class_id, 'effective_priority', priority, 'attempts', 0,
    'progress', '0', 'event_seq', 1 }
  local given = {}
  for i = first, last, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
    given[ARGV[i]] = ARGV[i + 1]
  end
  local svc, customer = given['service_type'], given['customer_id'] or ''
  redis.call('HSET', job_key, unpack(fields))
  redis.call('ZADD', P .. 'jobs:pending', score, job_id)
  enqueue_in_class(job_id, score, class_id, svc, customer, given['requirements'])
  if idem ~= '' then
    redis.call('SET', P .. 'idem:' .. idem, job_id, 'PX', RETENTION_MS)
  end
  emit(job_key, job_id, 'accepted', { service_type = svc, priority = tonumber(priority) }, 1,
    customer)
  return { 1, job_id, int(now), redis.call('ZRANK', P .. 'jobs:pending', job_id) }, svc
end


-- Store the result of a job the worker holds (complete.lua, complete_claim.lua). Returns
-- {'ok'}, or {'stale'} / {'cancelled'} when the fence refuses it.
local function complete_job(worker_id, job_id, token, result)
  local job_key, why = fenced(worker_id, job_id, token)
  if not job_key then return { why } end
  local now = now_ms()
  redis.call('HSET', job_key, 'result', result, 'progress', '100', 'error', '')
  finish(job_key, job_id, 'completed', now)
  redis.call('HDEL', P .. 'jobs:active:' .. worker_id, job_id)
  redis.call('HINCRBY', P .. 'worker:' .. worker_id, 'completed', 1)
  bump_stat(now, 'completed')
  local claimed = tonumber(redis.call('HGET', job_key, 'claimed_at') or now)
  bump_stat(now, 'run_ms', now - claimed)
  emit(job_key, job_id, 'completed', { worker_id = worker_id, run_ms = now - claimed })
  return { 'ok' }
end


-- The claim (claim.lua, complete_claim.lua): take the best pending job `worker_id` can run,
-- under a lease. Returns {'job', token, field1, value1, ...} or {'none', reason,
-- next_due_ms, next_offset}; claim.lua's header states the contract and the invariants.
local function claim_next(worker_id, caps_json, budget, offset, hops)
  local state = redis.call('HGET', P .. 'worker:' .. worker_id, 'state')
  if state == 'paused' or state == 'draining' then return { 'none', state, '', '' } end

  local now = now_ms()
  promote_due(now, 100)
  local caps = prepare_caps(caps_json)
  local lease_key = P .. 'jobs:active:' .. worker_id
  local running = running_of(lease_key)

  -- Customers whose classes are worth scanning: a loose-isolation job locks the worker to
  -- its customer; a strict worker serves only its allow-list; anyone else scans by service.
  local customers = nil
  for _, r in ipairs(running) do
    if r.isolation == 'loose' then customers = { r.customer } end
  end
  if not customers and caps.isolation == 'strict' then customers = caps.allowed_list end

  -- The first job of a class this worker may take: a worker that just failed a job is
  -- passed over while its avoidance window lasts.
  local function pick(class_id)
    local ids = redis.call('ZRANGE', P .. 'class:' .. class_id, 0, 7)
    for _, id in ipairs(ids) do
      local a = redis.call('HMGET', P .. 'job:' .. id, 'avoid_worker', 'avoid_until')
      if a[1] ~= worker_id or tonumber(a[2] or '0') <= now then return id end
    end
    return nil
  end

  local best_score, best_job, best_class, best_doc = nil, nil, nil, nil
  local truncated = false
  for _, svc in ipairs(caps.services) do
    local indexes = {}
    if customers then
      for _, c in ipairs(customers) do indexes[#indexes + 1] = P .. 'classes:' .. svc .. ':' .. c end
    else
      indexes[1] = P .. 'classes:' .. svc
    end
    for _, index in ipairs(indexes) do
      local entries = redis.call('ZRANGE', index, offset, offset + budget - 1, 'WITHSCORES')
      local settled = false
      for i = 1, #entries, 2 do
        local class_id, score = entries[i], tonumber(entries[i + 1])
        if best_score and score >= best_score then settled = true; break end
        local doc = class_doc(class_id)
        if not mismatch(doc.s, doc.c, doc.r, caps, running) then
          local id = pick(class_id)
          if id then
            best_score = tonumber(redis.call('ZSCORE', P .. 'class:' .. class_id, id))
            best_job, best_class, best_doc = id, class_id, doc
            settled = true
            break
          end
        end
      end
      if not settled and #entries == 2 * budget then truncated = true end
    end
  end

  if not best_job then
    if hops > 0 then
      -- Woken for work this worker cannot do: pass the wake-up on to another idle worker.
      for _, svc in ipairs(caps.services) do
        if redis.call('ZCARD', P .. 'classes:' .. svc) > 0 then notify(svc, hops - 1) end
      end
    end
    local due = redis.call('ZRANGE', P .. 'jobs:delayed', 0, 0, 'WITHSCORES')
    if truncated then return { 'none', 'more', due[2] or '', int(offset + budget) } end
    return { 'none', 'empty', due[2] or '', '' }
  end

  local job_key = P .. 'job:' .. best_job
  local svc, customer = best_doc.s, best_doc.c
  redis.call('ZREM', P .. 'class:' .. best_class, best_job)
  redis.call('ZREM', P .. 'jobs:pending', best_job)
  refresh_class(best_class, svc, customer)
  local token = int(redis.call('INCR', P .. 'jobs:tokens'))
  local isolation = val(best_doc.r.customer_isolation) or 'none'
  redis.call('HSET', job_key, 'status', 'active', 'worker_id', worker_id, 'token', token,
    'claimed_at', int(now), 'progress', '0', 'message', '')
  redis.call('HDEL', job_key, 'avoid_worker', 'avoid_until', 'retry_at')
  redis.call('HSET', lease_key, best_job, token .. '|' .. customer .. '|' .. isolation .. '|' .. int(now))
  local timeout_ms = tonumber(redis.call('HGET', job_key, 'timeout_ms') or '1800000')
  redis.call('ZADD', P .. 'jobs:active', now + timeout_ms, best_job)
  redis.call('HINCRBY', P .. 'worker:' .. worker_id, 'claimed', 1)
  bump_stat(now, 'claimed')
  local wait_ms = now - tonumber(redis.call('HGET', job_key, 'created_at'))
  emit(job_key, best_job, 'claimed', { worker_id = worker_id, wait_ms = wait_ms })
  -- More work of this service is waiting: wake one more idle worker (at most one token is
  -- left lying around when nobody is idle).
  if redis.call('ZCARD', P .. 'classes:' .. svc) > 0
      and redis.call('LLEN', P .. 'notify:' .. svc) == 0 then
    notify(svc, 3)
  end
  local reply = { 'job', token }
  local flat = redis.call('HGETALL', job_key)
  for i = 1, #flat do reply[#reply + 1] = flat[i] end
  return reply
end
