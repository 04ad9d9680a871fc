-- expire_unclaimed.lua: maintenance. Fail the pending jobs that no worker has claimed within
-- the maximum pending age (HUB_MAX_PENDING_SECONDS): a job whose service or requirements no
-- worker offers would otherwise wait forever.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  maximum pending age, ms: jobs submitted longer ago than this and never claimed fail
-- ARGV[5]  limit: at most this many jobs per call
-- Returns  the ids of the jobs it failed, oldest first.
-- Invariants: idempotent and safe to run from several hubs at once (each call is atomic and
-- a job it fails leaves jobs:unclaimed, so a second call finds nothing left to do). Only a
-- job still pending and never claimed fails: a claim removes it from jobs:unclaimed, so a
-- job that a worker took once, and that came back to wait for a retry, never expires here.
-- The job fails like any other (status failed, jobs:failed, retention TTL, a `failed`
-- event with attempts 0), so an operator may send it back with retry.lua.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "transitions"

local now = now_ms()
local max_age = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', K.unclaimed, '-inf', now - max_age, 'LIMIT', 0,
  tonumber(ARGV[5]))
local out = {}
local err = 'no worker took it within ' .. math.floor(max_age / 1000) .. ' s'
for _, job_id in ipairs(due) do
  local job_key = K.job(job_id)
  redis.call('ZREM', K.unclaimed, job_id)
  if redis.call('HGET', job_key, 'status') == 'pending' then
    unqueue(job_key, job_id)
    redis.call('HSET', job_key, 'error', err)
    finish(job_key, job_id, 'failed', now)
    bump_stat(now, 'failed')
    emit(job_key, job_id, 'failed', { error = err, attempts = 0 })
    out[#out + 1] = job_id
  end
end
return out
