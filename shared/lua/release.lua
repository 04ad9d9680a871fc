-- release.lua: a stopping worker puts back a job it will not finish.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  reason
-- Returns  {'ok'}, or {'stale'} / {'cancelled'}.
-- Invariants: fenced; no attempt penalty; the job keeps its original score; the job rings
-- a doorbell as a new one does (submit.lua).

--- @include "keys"
--- @include "leases"
--- @include "transitions"

local worker_id, job_id = ARGV[4], ARGV[5]
local job_key, why = fenced(worker_id, job_id, ARGV[6])
if not job_key then return { why } end
redis.call('HDEL', K.leases(worker_id), job_id)
put_back(job_key, job_id, worker_id, ARGV[7])
return { 'ok' }
