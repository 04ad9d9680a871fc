-- fail.lua: a worker could not finish a job it holds.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  error message
-- ARGV[8]  '1' retryable, '0' not (e.g. the AI service rejected the workflow)
-- ARGV[9]  backoff base ms (used only until a hub has published the fleet policy)
-- ARGV[10] backoff cap ms (likewise)
-- ARGV[11] jitter, a random number in [0, 1) chosen by the caller
-- ARGV[12] avoid ms: how long after the retry is due this worker is passed over (likewise)
-- Returns  {'retrying'} or {'failed'}, or {'stale'} / {'cancelled'} (nothing changes).
-- Invariants: fenced; attempts + 1, retryable or not (it counts the runs made); a retry
-- keeps the job's original score (priority and FIFO position); after max_retries retries,
-- or at once when not retryable, the job is failed and listed in jobs:failed.

--- @include "common"
--- @include "keys"
--- @include "leases"
--- @include "transitions"
--- @include "policy"

local worker_id, job_id = ARGV[4], ARGV[5]
local job_key, why = fenced(worker_id, job_id, ARGV[6])
if not job_key then return { why } end
local now = now_ms()
redis.call('HDEL', K.leases(worker_id), job_id)
redis.call('HINCRBY', K.worker(worker_id), 'failed', 1)
-- The backoff and avoid window are the fleet's (the hubs' settings), not this worker's.
return { retry_or_fail(job_key, job_id, now, ARGV[7], ARGV[8] == '1',
  policy_ms('backoff_ms', tonumber(ARGV[9])), policy_ms('backoff_max_ms', tonumber(ARGV[10])),
  tonumber(ARGV[11]), worker_id, policy_ms('avoid_ms', tonumber(ARGV[12]))) }
