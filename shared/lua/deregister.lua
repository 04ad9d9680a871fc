-- deregister.lua: a worker leaves cleanly; whatever it still holds goes back to pending.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- Returns  the number of jobs put back.
-- Invariants: no attempt penalty for jobs put back (a graceful stop is not a failure);
-- the worker record stays, marked offline, until the retention TTL (the fleet's policy,
-- include/policy.lua) removes it. It leaves the idle-worker index
-- (include/idle_workers.lua), and its own doorbell is dropped, with a job handed to it
-- (include/handoff.lua), which went back to pending with its other leases.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "leases"
--- @include "transitions"
--- @include "policy"
--- @include "idle_workers"

local worker_id = ARGV[4]
local now = now_ms()
local lease_key = K.leases(worker_id)
local returned = 0
local flat = redis.call('HGETALL', lease_key)
for i = 1, #flat, 2 do
  local job_id, token = flat[i], split(flat[i + 1], '|')[1]
  local job_key = K.job(job_id)
  if holds(job_key, worker_id, token) then
    put_back(job_key, job_id, worker_id, 'worker stopped')
    returned = returned + 1
  end
end
redis.call('DEL', lease_key)
clear_idle(worker_id)
redis.call('DEL', K.wake(worker_id))  -- a job handed to it went back above
redis.call('ZREM', K.workers, worker_id)
local worker_key = K.worker(worker_id)
redis.call('HSET', worker_key, 'status', 'offline', 'stopped_at', int(now))
redis.call('PEXPIRE', worker_key, retention_ms())
emit_worker(worker_id, 'worker_down', { reason = 'stopped' })
return returned
