-- claim_floor.lua: the least a claim can do, for `bench claim` only (never run by the
-- product): a lower bound for the Redis time of shared/lua/claim.lua on the same data, so
-- that the claim's cost can be set against it in one run.
--
-- It writes what any claim must for the job to be leased, fenced, seen and returned: the
-- job leaves its class, jobs:pending and jobs:unclaimed, the class's head is re-indexed, a
-- token fences it, the job hash and the lease are written, the lease deadline indexed, one
-- 'claimed' event appended, and the job returned. It finds the job with one read of the
-- verdict memo that claim.lua's scans fill (include/find_job.lua): the first class of the
-- service's index with verdict '1' (else the first not '0'). It leaves out everything else a
-- claim does: the operator state and lease cap, due retries, the worker's other leases
-- (customer isolation), decoding and matching a class, the avoided jobs, scheduling
-- policies, statistics, the idle-worker index, handoffs and waking other workers.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (shared/lua/include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  the worker's capabilities (JSON, as claim.lua's ARGV[5])
-- Returns  claim.lua's {'job', token, field1, value1, ...}, or {'none', 'empty'} when no
--          class in the first 32 of the index may be run.

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "queue"

local worker_id = ARGV[4]
local now = now_ms()
local caps = prepare_caps(ARGV[5])
local svc = caps.services[1]
if not caps.digest then caps.digest = redis.sha1hex(matched_part(caps.json)) end
local ids = redis.call('ZRANGE', K.service_classes(svc), 0, 31)
if #ids == 0 then return { 'none', 'empty' } end
local verdicts = redis.call('HMGET', K.verdicts(caps.digest), unpack(ids))
local class_id = nil
for i = 1, #ids do
  if verdicts[i] == '1' then class_id = ids[i]; break end
end
if not class_id then
  for i = 1, #ids do
    if verdicts[i] ~= '0' then class_id = ids[i]; break end
  end
end
if not class_id then return { 'none', 'empty' } end
local job_id = redis.call('ZRANGE', K.job_class(class_id), 0, 0)[1]
local job_key = K.job(job_id)
redis.call('ZREM', K.job_class(class_id), job_id)
redis.call('ZREM', K.pending, job_id)
redis.call('ZREM', K.unclaimed, job_id)
refresh_class(class_id, svc, '')
local token = int(redis.call('INCR', K.tokens))
redis.call('HSET', job_key, 'status', 'active', 'worker_id', worker_id, 'token', token,
  'claimed_at', int(now), 'progress', '0', 'message', '')
redis.call('HSET', K.leases(worker_id), job_id, token .. '||none|' .. int(now))
redis.call('ZADD', K.active, now + 1800000, job_id)
redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*', 'kind', 'job', 'type', 'claimed',
  'job', job_id, 'customer', '', 'data', cjson.encode({ worker_id = worker_id }))
local reply = { 'job', token }
local flat = redis.call('HGETALL', job_key)
for i = 1, #flat do reply[#reply + 1] = flat[i] end
return reply
