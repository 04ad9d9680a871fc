-- reprioritize.lua: change the effective priority of pending jobs (aging, deadline urgency).
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4..] job id, new effective priority (integer 0..1000) pairs
-- Returns  how many jobs were re-scored (jobs no longer pending are skipped).
-- Invariants: the submission sequence is kept, so FIFO among equal priorities still
-- follows submission order; the job moves in jobs:pending, in its class and in the class
-- indexes together, so a claim never sees a half-moved job.

--- @include "common"
--- @include "keys"
--- @include "queue"

local changed = 0
for i = 4, #ARGV, 2 do
  local job_id, priority = ARGV[i], tonumber(ARGV[i + 1])
  local job_key = K.job(job_id)
  local f = redis.call('HMGET', job_key, 'status', 'seq', 'class_id', 'service_type',
    'customer_id')
  if f[1] == 'pending' then
    local score = int((1000 - priority) * 8796093022208 + tonumber(f[2]))
    redis.call('HSET', job_key, 'score', score, 'effective_priority', priority)
    redis.call('ZADD', K.pending, score, job_id)
    if redis.call('ZSCORE', K.job_class(f[3]), job_id) then
      redis.call('ZADD', K.job_class(f[3]), score, job_id)
      refresh_class(f[3], f[4], f[5] or '')
    end
    changed = changed + 1
  end
end
return changed
