-- worker_state.lua: an operator pauses, drains or resumes a worker.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  'active' | 'paused' | 'draining'
-- Returns  1, or 0 when no such worker is known.
-- Invariants: the claim script refuses paused and draining workers, so the state takes
-- effect on the worker's next claim whatever the worker itself does. Resuming rings the
-- doorbell of each service the worker offers, so an idle paused worker claims at once.
-- Pausing or draining takes the worker out of the idle-worker index
-- (include/idle_workers.lua): no job is held back for a worker that will not claim it.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "idle_workers"

local worker_key = K.worker(ARGV[4])
if redis.call('EXISTS', worker_key) == 0 then return 0 end
redis.call('HSET', worker_key, 'state', ARGV[5])
if ARGV[5] ~= 'active' then clear_idle(ARGV[4]) end
local caps = redis.call('HGET', worker_key, 'capabilities')
if ARGV[5] == 'active' and caps then
  for _, svc in ipairs(val(cjson.decode(caps).services) or {}) do notify(svc, 3) end
end
emit_worker(ARGV[4], 'worker_state', { state = ARGV[5] })
return 1
