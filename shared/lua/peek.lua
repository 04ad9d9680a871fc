-- peek.lua: name the job claim.lua would take next for this worker, taking nothing.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  the worker's capabilities (JSON), as for claim.lua
-- ARGV[6]  scan budget, as for claim.lua
-- ARGV[7]  scan offset: 0, or the `next_offset` of a previous 'more' reply
-- ARGV[8]  the leases the worker holds in its other pools, as claim.lua's ARGV[10]
-- ARGV[9]  scheduling policies, as claim.lua's ARGV[13] ('' or absent: strict order)
-- Returns  {'job', job_id, effective_priority, submitted_ms}: the job a claim would take,
--          ranked so that pools compare (the score's FIFO part is a per-pool sequence;
--          these are not), or claim.lua's {'none', reason, next_due_ms, next_offset} with
--          reason 'empty', 'more', 'paused' or 'draining'.
-- Invariants:
--  * Read-only: it writes no key, does not move due retries into their classes (claim.lua
--    does, through promote_due), and never rings or passes on a doorbell: a worker may peek
--    every pool it serves before choosing one, and the peeks it does not act on cost nothing
--    else.
--  * It agrees with claim.lua: both search with find_best (include/find_job.lua). A retry
--    whose backoff is over, which the claim would first move into its class, is judged here
--    where it waits, by the same match, avoidance and score. One corner differs: a class
--    whose first 8 jobs all avoid this worker (it just failed them) hides its 9th from both,
--    and a due retry moved in front can push a job out of those 8 for the claim only.
--  * With scheduling policies the due retries that match are candidates of the same
--    chooser (include/choose.lua) as the classes, as they will be in the claim (in their
--    classes there: the same corner as above applies, and a due retry that would head a
--    class of its own is one candidate here where the claim sees its class).
--  * next_due_ms is the one the claim would report: the first retry still backing off once
--    the due ones (at most DUE_PER_CLAIM, as the claim moves) are counted as moved, or,
--    when fit leaves every candidate to smaller idle workers ('empty'), the held job's
--    deadline if that is sooner (the one the claim records for it).

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "find_job"
--- @include "choose"

local worker_id = ARGV[4]
local budget, offset = tonumber(ARGV[6]), tonumber(ARGV[7])
local barrier = claim_barrier(worker_id, 0)
if barrier then return { 'none', barrier, '', '' } end

local now = now_ms()
local caps = prepare_caps(ARGV[5])
local running = running_of(K.leases(worker_id), ARGV[8])
local sched = parse_scheduling(ARGV[9])

-- Due retries this worker may take, judged where they wait: the claim would first move
-- these into their classes.
local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, DUE_PER_CLAIM)
local due_matching = {}
for _, id in ipairs(due) do
  local f = redis.call('HMGET', K.job(id), 'status', 'score', 'service_type', 'customer_id',
    'requirements', 'class_id', 'preferred_models')
  local score = tonumber(f[2])
  local doc = { s = f[3], c = f[4] or '', r = cjson.decode(f[5] or '{}') }
  if f[7] and f[7] ~= '' then doc.p = cjson.decode(f[7]) end
  if f[1] == 'pending' and score and not avoids(worker_id, id, now)
      and not mismatch(doc.s, doc.c, doc.r, caps, running) then
    due_matching[#due_matching + 1] = { id = id, class = f[6], doc = doc, score = score }
  end
end

local best, truncated, decision = find_best(worker_id, caps, running, budget, offset, now,
  sched, due_matching)
local best_job, best_score = best and best.job, best and best.score
if not sched then
  for _, d in ipairs(due_matching) do
    if not best_score or d.score < best_score then best_job, best_score = d.id, d.score end
  end
end

if not best_job then
  local next_due = redis.call('ZRANGE', K.delayed, #due, #due, 'WITHSCORES')[2]
  if decision then
    -- Fit left everything to smaller idle workers: the claim would record this deadline.
    local f = redis.call('HMGET', K.job(decision.strict.job), 'held_since', 'held_until')
    local held_until = (tonumber(f[1] or '') or now) + sched.bound_ms.fit
    local before = tonumber(f[2] or '')
    if before and before < held_until then held_until = before end
    if not next_due or held_until < tonumber(next_due) then next_due = int(held_until) end
  end
  if truncated then return { 'none', 'more', next_due or '', int(offset + budget) } end
  return { 'none', 'empty', next_due or '', '' }
end
local priority, created = rank_of(best_job)
return { 'job', best_job, int(priority), int(created) }
