-- complete.lua: a worker finished a job it holds; store the result.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  result JSON
-- Returns  {'ok'}, or {'stale'} / {'cancelled'} (the result is discarded).
-- Invariants: fenced, so a job completes at most once and never after it was cancelled or
-- handed to another worker; the job hash expires RETENTION_MS after completion.

--- @include "complete_job"

return complete_job(ARGV[4], ARGV[5], ARGV[6], ARGV[7])
