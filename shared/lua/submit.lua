-- submit.lua: add one validated job, or return the job that already holds its id / key.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  job id
-- ARGV[5]  idempotency key digest, '' for none
-- ARGV[6]  requirement class id (shared/requirements.py: service, customer, requirements and
--          the preferred models)
-- ARGV[7]  effective priority, integer 0..1000 (higher runs first)
-- ARGV[8..] job hash fields as name, value pairs (structured values already JSON); the
--          optional `preferred_models` (a JSON list) also becomes the class document's "p"
-- Returns  {1, job_id, created_at_ms, queue_position} when created (position: 0-based rank
--          in jobs:pending), {0, existing_job_id} when the id or idempotency key already
--          names a job (nothing changes then; submit_job.lua says why it still writes).
-- Invariants: the job hash, jobs:pending, its class ZSET and the class indexes are written
-- together, except for a job handed over, which is written with its lease and queued
-- nowhere; a job id is never written twice; equal priorities are FIFO (submit_job in
-- include/submit_job.lua); preferred models never restrict which worker may claim. A new
-- job rings one doorbell: that of an idle worker with its preferred models all warm whose
-- claims apply affinity, where one can run it (include/idle_workers.lua wake_warm; it
-- leaves the warm index), else its service's; or, where an idle worker that accepts
-- handoffs would claim it now, none: the job is leased to that worker in this call and its
-- claim pushed onto its doorbell (include/handoff.lua, whose header proves the order exact).

--- @include "common"
--- @include "events"
--- @include "queue"
--- @include "submit_job"
--- @include "handoff"

local now = now_ms()
local reply, svc, customer, requirements, preferred, taker = submit_job(ARGV[4], ARGV[5],
  ARGV[6], ARGV[7], 8, #ARGV, now, nil, choose_for_new)
if taker then
  hand_over(taker, reply[2], ARGV[6], now)
elseif svc then
  ring_for(now, svc, customer, requirements, preferred)
end
if svc then bump_stat(now, 'submitted') end
return reply
