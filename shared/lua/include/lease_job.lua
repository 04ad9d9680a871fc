-- lease_job.lua: take one pending job under a lease for one worker: what a claim does once
-- it has chosen its job (claim_next.lua) and what a direct handoff does at submission
-- (handoff.lua). One function, so fencing, the token, the lease, the deadline, the
-- statistics and the 'claimed' event are the same whichever path took the job.

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"

-- What the lease reads from a job (the HMGET in lease_job, in its order) when the job was
-- just written by submit_job.lua and queued nowhere (a single submission handed over at
-- once, handoff.lua): its time limit (`timeout_ms`, false for none), created now, one event
-- so far ('accepted'), no hold, no attempt.
local function unqueued_job_fields(timeout_ms, now)
  return { timeout_ms, int(now), '1', false, false, false, '0' }
end

-- Take `job_id` (pending, claimable, in class `class_id` whose document is `doc`) for
-- `worker_id` at `now`: it leaves its class, jobs:pending and jobs:unclaimed; a new token
-- fences it; the lease goes into jobs:active:{worker} and its deadline into jobs:active.
-- `event` holds the 'claimed' event's fields besides worker_id, wait_ms and how long
-- policies held the job (a handoff's handoff = 1); `fair_charge` (nil: none) is what its
-- completion charges to its customer's fair-share usage (fair.lua). `new_job` (nil for a
-- queued job): a job never queued nor written yet, as submit_job.lua hands it over
-- ({timeout_ms=, fields=}: its time limit, false for none, and its fields as a name, value
-- list); the lease writes those fields with its own, and what it would read of the job is
-- known (unqueued_job_fields). Returns the new token and the job's fields as a name, value
-- list: the hash's; for a new job, its list with the lease's fields appended, so a name
-- the lease rewrote (status, progress, event_seq) comes twice, the later value being the
-- one stored, as a mapping built in order keeps it (shared/broker_replies.py wake_reply).
-- claim_reply makes them claim.lua's reply.
local function lease_job(worker_id, job_id, class_id, doc, now, event, fair_charge, new_job)
  local job_key = K.job(job_id)
  local svc, customer = doc.s, doc.c
  local known = new_job and unqueued_job_fields(new_job.timeout_ms, now)
  if not known then
    redis.call('ZREM', K.job_class(class_id), job_id)
    redis.call('ZREM', K.pending, job_id)
    redis.call('ZREM', K.unclaimed, job_id)
    refresh_class(class_id, svc, customer)
  end
  local token = int(redis.call('INCR', K.tokens))
  local isolation = val(doc.r.customer_isolation) or 'none'
  -- One read of what the lease, the statistics and the event need from the job, and the
  -- event's sequence number written with the status: a claim is the hottest script, and
  -- every redis.call costs it a few microseconds.
  local f = known or redis.call('HMGET', job_key, 'timeout_ms', 'created_at', 'event_seq',
    'held_by', 'held_since', 'held_at', 'attempts')
  local seq = (tonumber(f[3]) or 0) + 1
  -- How long policies held this job (the lease clears the held_* fields): from its first
  -- bounded pass-over to now, and to its last pass-over (the bound limits that one).
  local held_since = tonumber(f[5] or '')
  if held_since then
    event.held_by = f[4] or nil
    event.held_ms = math.floor(now - held_since)
    event.passed_over_ms = math.floor((tonumber(f[6] or '') or now) - held_since)
    redis.call('ZREM', K.held, job_id)  -- only a bounded hold indexes it (claim_next hold)
  elseif f[4] then
    event.held_by = f[4]
  end
  local set = { 'status', 'active', 'worker_id', worker_id, 'token', token,
    'claimed_at', int(now), 'progress', '0', 'message', '', 'event_seq', int(seq) }
  if fair_charge then
    set[#set + 1] = 'fair_charge'
    set[#set + 1] = fair_charge
  end
  local written = new_job and new_job.fields
  if written then
    -- A handed job's hash is written here, the submission's fields followed by the
    -- lease's in one HSET (a name in both takes the later value): one write of it, not two.
    local n = #written
    for i = 1, #set do written[n + i] = set[i] end
    redis.call('HSET', job_key, unpack(written))
  else
    redis.call('HSET', job_key, unpack(set))
  end
  -- The lease clears a retry's avoidance and backoff and a policy's hold, deleting only
  -- fields that may be there: an absent field costs HDEL a scan of the whole hash. A retry
  -- writes its fields with its attempt (transitions.lua retry_or_fail; retry.lua resets
  -- attempts and deletes them together), and every hold writes held_by (claim_next.lua).
  local stale = {}
  if (f[7] or '0') ~= '0' then stale = { 'avoid_worker', 'avoid_until', 'retry_at' } end
  if f[4] then
    for _, name in ipairs({ 'held_by', 'held_at', 'held_since', 'held_until' }) do
      stale[#stale + 1] = name
    end
  end
  if #stale > 0 then redis.call('HDEL', job_key, unpack(stale)) end
  redis.call('HSET', K.leases(worker_id), job_id,
    token .. '|' .. customer .. '|' .. isolation .. '|' .. int(now))
  redis.call('ZADD', K.active, int(now + (tonumber(f[1] or '') or 1800000)), job_id)
  redis.call('HINCRBY', K.worker(worker_id), 'claimed', '1')
  bump_stat(now, 'claimed')
  local wait_ms = now - tonumber(f[2])
  bump_wait(now, wait_ms)
  emit(job_key, job_id, 'claimed', { worker_id = worker_id, wait_ms = wait_ms,
    held_by = event.held_by, held_ms = event.held_ms, passed_over_ms = event.passed_over_ms,
    handoff = event.handoff }, seq, customer)
  -- More work of this service is waiting: wake one more idle worker (at most one token is
  -- left lying around when nobody is idle).
  if redis.call('ZCARD', K.service_classes(svc)) > 0
      and redis.call('LLEN', K.notify(svc)) == 0 then
    notify(svc, 3)
  end
  -- A handed job's fields are known: the HSET above wrote them (its HDEL deleted none: a
  -- new job has no attempt and no hold). Reading the hash back and decoding the reply was
  -- a tenth of a handed submission's cycles (measured per Lua line).
  if not written then return token, redis.call('HGETALL', job_key) end
  return token, written
end

-- claim.lua's reply {'job', token, field1, value1, ...} for lease_job's answer.
local function claim_reply(token, flat)
  return { 'job', token, unpack(flat) }
end
