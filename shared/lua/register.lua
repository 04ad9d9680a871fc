-- register.lua: a worker joins (or rejoins) the fleet.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  lease timeout ms: the worker's own (its heartbeat interval fits in it); recorded
--          as `lease_ms` for heartbeats that renew by the registered lease
-- ARGV[6]  capabilities JSON
-- ARGV[7]  descriptive info JSON (host, version, connectors, dashboard URL, ...)
-- Returns  the operator state the worker must honour ('active', 'paused' or 'draining').
-- Invariants: the operator state survives restarts (set only when absent); a worker that
-- restarts under the same id keeps its counters. Leases left by a previous run of this id
-- stay until the heartbeat's orphan reconciliation returns them to pending. A worker that
-- registers is not idle (include/idle_workers.lua) until a claim of its finds nothing: an
-- entry its previous run left, perhaps with other capabilities, is dropped, and so is its
-- doorbell, with any job handed to the previous run (its lease is orphaned).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "idle_workers"

local worker_id = ARGV[4]
local now = now_ms()
local worker_key = K.worker(worker_id)
clear_idle(worker_id)
-- A job handed to a previous run of this id (include/handoff.lua) is not this run's: its
-- lease goes back as orphaned; its token must never start it here.
redis.call('DEL', K.wake(worker_id))
redis.call('HSET', worker_key, 'id', worker_id, 'capabilities', ARGV[6], 'info', ARGV[7],
  'status', 'idle', 'registered_at', int(now), 'last_heartbeat', int(now), 'lease_ms', ARGV[5])
redis.call('HSETNX', worker_key, 'state', 'active')
redis.call('PERSIST', worker_key)
redis.call('ZADD', K.workers, now + tonumber(ARGV[5]), worker_id)
emit_worker(worker_id, 'worker_up', { reason = 'registered' })
return redis.call('HGET', worker_key, 'state')
