-- submit.lua: add one validated job, or return the job that already holds its id / key.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (lib.lua)
-- ARGV[4]  job id
-- ARGV[5]  idempotency key digest, '' for none
-- ARGV[6]  requirement class id
-- ARGV[7]  effective priority, integer 0..1000 (higher runs first)
-- ARGV[8..] job hash fields as name, value pairs (structured values already JSON)
-- Returns  {1, job_id, created_at_ms, queue_position} when created (position: 0-based rank
--          in jobs:pending), {0, existing_job_id} when the id or idempotency key already
--          names a job (nothing is written then).
-- Invariants: the job hash, jobs:pending, its class ZSET and the class indexes are written
-- together; a job id is never written twice. The score (1000 - priority) * 2^43 + seq is
-- an exact integer in a double: higher priority first, then submission order, where seq
-- comes from one Redis counter, so equal priorities are FIFO even within one millisecond.

local job_id, idem = ARGV[4], ARGV[5]
if idem ~= '' then
  local existing = redis.call('GET', P .. 'idem:' .. idem)
  if existing and redis.call('EXISTS', P .. 'job:' .. existing) == 1 then
    return { 0, existing }
  end
end
local job_key = P .. 'job:' .. job_id
if redis.call('EXISTS', job_key) == 1 then return { 0, job_id } end

local now = now_ms()
local seq = redis.call('INCR', P .. 'jobs:seq')
local score = (1000 - tonumber(ARGV[7])) * 8796093022208 + seq
local fields = { 'id', job_id, 'status', 'pending', 'created_at', int(now), 'seq', seq,
  'score', int(score), 'class_id', ARGV[6], 'effective_priority', ARGV[7], 'attempts', 0,
  'progress', '0', 'event_seq', 0 }
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', job_key, unpack(fields))
redis.call('ZADD', P .. 'jobs:pending', int(score), job_id)
local svc = enqueue_claimable(job_key, job_id)
if idem ~= '' then
  redis.call('SET', P .. 'idem:' .. idem, job_id, 'PX', RETENTION_MS)
end
notify(svc, 3)
bump_stat(now, 'submitted')
emit(job_key, job_id, 'accepted', { service_type = svc, priority = tonumber(ARGV[7]) })
return { 1, job_id, int(now), redis.call('ZRANK', P .. 'jobs:pending', job_id) }
