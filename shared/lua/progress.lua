-- progress.lua: a worker reports progress on a job it holds.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  progress, 0..100
-- ARGV[8]  message ('' for none)
-- Returns  {'ok'}, or {'stale'} / {'cancelled'}: the worker no longer holds the job and
--          must stop working on it.
-- Invariants: fenced by (worker id, token): a zombie worker changes nothing.

--- @include "events"
--- @include "leases"

local job_key, why = fenced(ARGV[4], ARGV[5], ARGV[6])
if not job_key then return { why } end
redis.call('HSET', job_key, 'progress', ARGV[7], 'message', ARGV[8])
emit(job_key, ARGV[5], 'progress', { progress = tonumber(ARGV[7]), message = ARGV[8] })
return { 'ok' }
