-- reap.lua: maintenance. Recover the jobs of dead workers, time out overlong jobs, make
-- due retries claimable.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  limit: at most this many dead workers, timed-out jobs and due retries per call
-- ARGV[5]  backoff base ms (for timeouts; until a hub has published the fleet policy)
-- ARGV[6]  backoff cap ms (likewise)
-- ARGV[7]  jitter in [0, 1)
-- ARGV[8]  avoid ms (see fail.lua; likewise)
-- Returns  {promoted, {worker, job, outcome, ...}, {job, outcome, ...}}: how many retries
--          became claimable, the jobs recovered from dead workers, the jobs timed out;
--          outcome is 'retrying' or 'failed'.
-- Invariants: idempotent and safe to run from several hubs at once (each call is atomic and
-- a second call finds nothing left to do). Only a worker whose liveness deadline passed
-- loses its leases: a slow job on a live worker is never taken away. A lost lease costs
-- one attempt and is claimable again at once; a timeout is a failure with backoff, and
-- the worker is told to interrupt the job. A dead worker leaves the idle-worker index
-- (include/idle_workers.lua) and its doorbell is dropped, so no job is held back for it;
-- a job handed to it (include/handoff.lua) is recovered with its other leases.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "leases"
--- @include "transitions"
--- @include "policy"
--- @include "idle_workers"

local now = now_ms()
local limit = tonumber(ARGV[4])
local base = policy_ms('backoff_ms', tonumber(ARGV[5]))
local cap = policy_ms('backoff_max_ms', tonumber(ARGV[6]))
local jitter, avoid = tonumber(ARGV[7]), policy_ms('avoid_ms', tonumber(ARGV[8]))
local promoted = promote_due(now, limit)

local recovered = {}
local dead = redis.call('ZRANGEBYSCORE', K.workers, '-inf', now, 'LIMIT', 0, limit)
for _, worker_id in ipairs(dead) do
  local lease_key = K.leases(worker_id)
  local flat = redis.call('HGETALL', lease_key)
  for i = 1, #flat, 2 do
    local job_id = flat[i]
    local job_key = K.job(job_id)
    if holds(job_key, worker_id, split(flat[i + 1], '|')[1]) then
      local outcome = retry_or_fail(job_key, job_id, now,
        'worker ' .. worker_id .. ' stopped heartbeating', true, 0, 0, 0, worker_id, avoid)
      recovered[#recovered + 1] = worker_id
      recovered[#recovered + 1] = job_id
      recovered[#recovered + 1] = outcome
    end
  end
  redis.call('DEL', lease_key)
  clear_idle(worker_id)
  redis.call('DEL', K.wake(worker_id))  -- a job handed to it was recovered above
  redis.call('ZREM', K.workers, worker_id)
  local worker_key = K.worker(worker_id)
  if redis.call('EXISTS', worker_key) == 1 then
    redis.call('HSET', worker_key, 'status', 'offline')
    redis.call('PEXPIRE', worker_key, retention_ms())
  end
  emit_worker(worker_id, 'worker_down', { reason = 'heartbeat expired' })
end

local timed_out = {}
local overdue = redis.call('ZRANGEBYSCORE', K.active, '-inf', now, 'LIMIT', 0, limit)
for _, job_id in ipairs(overdue) do
  local job_key = K.job(job_id)
  local f = redis.call('HMGET', job_key, 'status', 'worker_id', 'timeout_ms')
  redis.call('ZREM', K.active, job_id)
  if f[1] == 'active' then
    redis.call('HDEL', K.leases(f[2]), job_id)
    redis.call('PUBLISH', K.control(f[2]), 'cancel ' .. job_id)
    local seconds = math.floor(tonumber(f[3] or '0') / 1000)
    local outcome = retry_or_fail(job_key, job_id, now,
      'timed out after ' .. seconds .. ' s on worker ' .. f[2], true, base, cap, jitter, f[2],
      avoid)
    timed_out[#timed_out + 1] = job_id
    timed_out[#timed_out + 1] = outcome
  end
end
return { promoted, recovered, timed_out }
