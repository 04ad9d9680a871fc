-- complete.lua: a worker finished a job it holds; store the result.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (lib.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  result JSON
-- Returns  {'ok'}, or {'stale'} / {'cancelled'} (the result is discarded).
-- Invariants: fenced, so a job completes at most once and never after it was cancelled or
-- handed to another worker; the job hash expires RETENTION_MS after completion.

local worker_id, job_id = ARGV[4], ARGV[5]
local job_key, why = fenced(worker_id, job_id, ARGV[6])
if not job_key then return { why } end
local now = now_ms()
redis.call('HSET', job_key, 'result', ARGV[7], 'progress', '100', 'error', '')
finish(job_key, job_id, 'completed', now)
redis.call('HDEL', P .. 'jobs:active:' .. worker_id, job_id)
redis.call('HINCRBY', P .. 'worker:' .. worker_id, 'completed', 1)
bump_stat(now, 'completed')
local claimed = tonumber(redis.call('HGET', job_key, 'claimed_at') or now)
bump_stat(now, 'run_ms', now - claimed)
emit(job_key, job_id, 'completed', { worker_id = worker_id, run_ms = now - claimed })
return { 'ok' }
