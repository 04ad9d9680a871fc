-- cancel.lua: cancel a job wherever it is.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  job id
-- ARGV[5]  reason
-- Returns  {'cancelled', 'pending'}: it left the queue;
--          {'cancelled', 'active', worker_id}: the worker was signalled on control:{worker};
--          {'unchanged', status}: it had already finished; {'missing'}: no such job.
-- Invariants: terminal at once. The lease of an active job stays until its worker reports
-- back (any fenced call answers 'cancelled'), so customer isolation still counts the job
-- while it is being interrupted; a later complete or fail is rejected.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "transitions"

local job_id = ARGV[4]
local job_key = K.job(job_id)
local f = redis.call('HMGET', job_key, 'status', 'worker_id')
if not f[1] then return { 'missing' } end
local now = now_ms()
if f[1] == 'pending' then
  unqueue(job_key, job_id)
  finish(job_key, job_id, 'cancelled', now)
  redis.call('HSET', job_key, 'message', ARGV[5])
  bump_stat(now, 'cancelled')
  emit(job_key, job_id, 'cancelled', { was = 'pending', reason = ARGV[5] })
  return { 'cancelled', 'pending' }
end
if f[1] == 'active' then
  finish(job_key, job_id, 'cancelled', now)
  redis.call('HSET', job_key, 'message', ARGV[5])
  redis.call('PUBLISH', K.control(f[2]), 'cancel ' .. job_id)
  bump_stat(now, 'cancelled')
  emit(job_key, job_id, 'cancelled', { was = 'active', worker_id = f[2], reason = ARGV[5] })
  return { 'cancelled', 'active', f[2] }
end
return { 'unchanged', f[1] }
