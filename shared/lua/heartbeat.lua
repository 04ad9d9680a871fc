-- heartbeat.lua: a worker is alive; reconcile what it runs with what it holds.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  lease timeout ms: the worker is dead if no heartbeat arrives within it; negative:
--          the lease the worker registered with (`lease_ms`), -ARGV[5] if none
-- ARGV[6]  status to show ('idle' | 'busy' | ...)
-- ARGV[7]  capabilities JSON, or '' when unchanged since the last call
-- ARGV[8]  grace ms before an unreported lease counts as orphaned
-- ARGV[9..] job id, token pairs: what the worker is running right now
-- Returns  {revoked job ids...}: jobs the worker runs but no longer holds (cancelled,
--          timed out, or re-queued after it was presumed dead). It must interrupt them.
-- Invariants: liveness is the score in `workers` (deadline = now + lease timeout), which
-- renews every lease the worker holds at once. A lease the worker does not report (its
-- claim reply was lost) goes back to pending without an attempt penalty once older than
-- the grace period, so a lost reply never strands a job until its timeout.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "leases"
--- @include "transitions"

local worker_id = ARGV[4]
local now = now_ms()
local worker_key = K.worker(worker_id)
local lease_key = K.leases(worker_id)
-- A negative lease: renew by the lease the worker registered with (the gateway's heartbeats
-- for a worker whose lease timeout is its own), or by -ARGV[5] when it registered none.
local lease = tonumber(ARGV[5])
if lease < 0 then lease = tonumber(redis.call('HGET', worker_key, 'lease_ms') or '') or -lease end
if redis.call('ZADD', K.workers, now + lease, worker_id) == 1 then
  emit_worker(worker_id, 'worker_up', { reason = 'heartbeat' })
end
redis.call('HSET', worker_key, 'last_heartbeat', int(now), 'status', ARGV[6])
redis.call('PERSIST', worker_key)
if ARGV[7] ~= '' then redis.call('HSET', worker_key, 'capabilities', ARGV[7]) end

local revoked, reported = {}, {}
for i = 9, #ARGV, 2 do
  local job_id, token = ARGV[i], ARGV[i + 1]
  reported[job_id] = true
  local lease = redis.call('HGET', lease_key, job_id)
  if not lease or split(lease, '|')[1] ~= token
      or not holds(K.job(job_id), worker_id, token) then
    revoked[#revoked + 1] = job_id
  end
end

local flat = redis.call('HGETALL', lease_key)
for i = 1, #flat, 2 do
  local job_id = flat[i]
  local lease = split(flat[i + 1], '|')
  if not reported[job_id] and tonumber(lease[4] or '0') + tonumber(ARGV[8]) < now then
    redis.call('HDEL', lease_key, job_id)
    local job_key = K.job(job_id)
    if holds(job_key, worker_id, lease[1]) then
      put_back(job_key, job_id, worker_id, 'orphaned lease')
    end
  end
end
return revoked
