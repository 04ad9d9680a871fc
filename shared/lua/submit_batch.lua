-- submit_batch.lua: add several validated jobs in one call, each exactly as submit.lua would.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  number of jobs N
-- ARGV[5..] N groups, one per job: job id, idempotency key digest ('' for none), requirement
--          class id, effective priority, number of hash-field arguments F, then F arguments
--          (name, value pairs as in submit.lua, `preferred_models` included)
-- Returns  a flat list of N groups of four: 1, job_id, created_at_ms, queue_position for a
--          job created; 0, existing_job_id, '', '' for a job whose id or key already named
--          a job (nothing changes for that one).
-- Invariants: those of submit.lua for each job, in argument order (so FIFO within a
-- priority follows the order of the batch); the service's doorbell gets one token per new
-- job neither handed to an idle worker (include/handoff.lua) nor woken a warm idle worker
-- for. One call is one atomic step; callers keep
-- batches small (Broker.submit_many sends at most 100 jobs per call) so Redis is never
-- blocked long.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "idle_workers"
--- @include "submit_job"
--- @include "handoff"

-- One doorbell push per service and one statistics update per batch, with the counts of
-- the batch; a job that prefers models rings a warm idle worker's own doorbell instead
-- where one has them (queue.lua ring_for).
local now = now_ms()
local out, pos, created, per_service = {}, 5, 0, {}
-- The batch's job numbers, drawn from the counter at once: one INCRBY instead of an INCR a
-- job. Consecutive in argument order, so FIFO holds; a job that already existed leaves its
-- number unused, a gap that orders nothing.
local count = tonumber(ARGV[4])
local first_seq = redis.call('INCRBY', K.seq, count) - count
-- Per service, whether any worker idles: nothing in a batch makes a worker idle, so where
-- none did at its first job, its other jobs skip the handoff's look (an EXISTS a job less
-- in a batch nobody is waiting for).
local any_idle = {}
for i = 1, count do
  local nfields = tonumber(ARGV[pos + 4])
  local reply, svc, customer, requirements, preferred = submit_job(ARGV[pos], ARGV[pos + 1],
    ARGV[pos + 2], ARGV[pos + 3], pos + 5, pos + 4 + nfields, now, first_seq + i)
  if svc then
    created = created + 1
    -- A job a warm idle worker was woken for needs no token on the service's doorbell.
    if any_idle[svc] == nil then
      any_idle[svc] = redis.call('EXISTS', K.idle_workers(svc)) == 1
    end
    local warm = (any_idle[svc]
        and hand_off(now, reply[2], svc, customer, requirements, preferred))
      or (preferred and preferred ~= ''
        and wake_warm(svc, customer, requirements, cjson.decode(preferred), now))
    if not warm then per_service[svc] = (per_service[svc] or 0) + 1 end
  end
  out[#out + 1] = reply[1]
  out[#out + 1] = reply[2]
  out[#out + 1] = reply[3] or ''
  out[#out + 1] = reply[4] or ''
  pos = pos + 5 + nfields
end
for svc, count in pairs(per_service) do notify(svc, 3, count) end
if created > 0 then bump_stat(now, 'submitted', created) end
return out
