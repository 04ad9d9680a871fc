-- claim.lua: atomically take the best pending job this worker can run, under a lease.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (lib.lua)
-- ARGV[4]  worker id
-- ARGV[5]  the worker's capabilities (JSON, shared.capabilities.Capabilities)
-- ARGV[6]  scan budget: classes examined per index per call
-- ARGV[7]  scan offset: 0, or the `next_offset` of a previous 'more' reply
-- ARGV[8]  wake-up hops the caller received with its wake-up token (0 if none)
-- Returns  {'job', token, field1, value1, ...} (the claimed job's hash), or
--          {'none', reason, next_due_ms, next_offset} where reason is 'empty' (nothing
--          this worker can run), 'more' (the scan budget ran out: call again with
--          next_offset), 'paused' or 'draining'; next_due_ms is when the next backing-off
--          retry becomes claimable ('' if none).
-- Invariants:
--  * Order: among the classes this worker matches, the job with the lowest score (highest
--    priority, then oldest) wins. Classes are indexed per service by their head job's
--    score, so the scan stops at the first matching class: cost grows with the number of
--    non-matching classes ranked ahead, never with the number of jobs in them.
--  * Bounded work: at most budget classes per index (one index per offered service, or per
--    allowed customer for strict / loose-locked workers). Past the bound the reply is
--    'more' and the caller continues from next_offset in a new call; ordering across
--    different services may then be approximate.
--  * A job is claimed by at most one worker: it leaves jobs:pending and its class in the
--    same call that writes the lease (jobs:active:{worker}) and sets status 'active'.
--  * A paused or draining worker (operator state) claims nothing.

local worker_id = ARGV[4]
local state = redis.call('HGET', P .. 'worker:' .. worker_id, 'state')
if state == 'paused' or state == 'draining' then return { 'none', state, '', '' } end

local now = now_ms()
promote_due(now, 100)
local caps = prepare_caps(ARGV[5])
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

local budget, offset = tonumber(ARGV[6]), tonumber(ARGV[7])
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
  local hops = tonumber(ARGV[8])
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
