-- claim.lua: atomically take the best pending job this worker can run, under a lease.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  the worker's capabilities (JSON, shared.capabilities.Capabilities)
-- ARGV[6]  scan budget: classes examined per index per call
-- ARGV[7]  scan offset: 0, or the `next_offset` of a previous 'more' reply
-- ARGV[8]  wake-up hops the caller received with its wake-up token (0 if none)
-- ARGV[9]  most leases the worker may hold (a gateway grant's max_concurrency; 0 or absent: no cap)
-- ARGV[10] the leases the worker holds in its other pools, for customer isolation: JSON
--          [{"customer": "...", "isolation": "..."}, ...] ('' or absent: none)
-- ARGV[11] floor priority, ARGV[12] floor submission ms (both absent or '': no floor): take
--          the best job only if it ranks at least that high (a higher effective priority,
--          or the same and submitted no later); a worker serving several pools passes the
--          best job it saw in its other pools (worker/pooled_broker.py)
-- Returns  {'job', token, field1, value1, ...} (the claimed job's hash), or
--          {'none', reason, next_due_ms, next_offset} where reason is 'empty' (nothing
--          this worker can run), 'more' (the scan budget ran out: call again with
--          next_offset), 'paused', 'draining' or 'limit' (the worker holds ARGV[9]
--          leases already), or {'none', 'worse', next_due_ms, '', priority, submitted_ms}:
--          the best job ranks below the floor (its rank follows; nothing was taken);
--          next_due_ms is when the next backing-off retry becomes claimable ('' if none).
-- Invariants:
--  * Order: among the classes this worker matches, the job with the lowest score (highest
--    priority, then oldest) wins. Classes are indexed per service by their head job's
--    score, so the scan stops at the first matching class: cost grows with the number of
--    non-matching classes ranked ahead, never with the number of jobs in them. (Where the
--    worker avoids a class's head, having just failed it, the class offers a later job, and
--    the scan goes on while other classes' heads rank above that job.)
--  * Bounded work: at most budget classes per index (one index per offered service, or per
--    allowed customer for strict / loose-locked workers). Past the bound the reply is
--    'more' and the caller continues from next_offset in a new call; ordering across
--    different services may then be approximate.
--  * A job is claimed by at most one worker: it leaves jobs:pending and its class in the
--    same call that writes the lease (jobs:active:{worker}) and sets status 'active'.
--  * A paused or draining worker (operator state) claims nothing.
--  * The idle-worker index (include/idle_workers.lua): an 'empty' reply indexes the worker
--    as idle under each service it offers, with the capabilities it claimed with; a
--    claimed job, or a 'paused', 'draining' or 'limit' reply, takes it out.
--  * The job taken is the one peek.lua names for the same worker and queue (both search
--    with find_best in include/find_job.lua).

--- @include "claim_next"

return claim_next(ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11] or ''),
  tonumber(ARGV[12] or ''))
