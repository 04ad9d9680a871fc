-- submit_job.lua: add one job (submit.lua, submit_batch.lua).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "policy"

-- The reply for a job that already exists. It rewrites the job's id field with the same
-- value: a write, so that a caller waiting for replicas (REDIS_WAIT_REPLICAS, WAIT on the
-- same connection) waits for everything written before it, the original submission
-- included. Redis 6.2 moves the offset WAIT waits for only when the connection writes;
-- without this write it would count a pooled connection's last write, perhaps long ago,
-- and acknowledge a retried submission that no replica holds yet. (Redis 7 moves it on
-- every command; the write then costs one HSET on a retry, and changes nothing.)
local function found(job_id)
  redis.call('HSET', K.job(job_id), 'id', job_id)
  return { 0, job_id }
end

-- Add one job at server time `now`; its hash fields are ARGV[first..last] as name, value
-- pairs. Returns {1, job_id, created_at_ms, queue_position} when created, or
-- {0, existing_job_id} when the id or idempotency key already names a job (nothing
-- changes then; see `found`), and when created the job's service, customer, requirements
-- and preferred models (queue.lua ring_for's arguments after `now`). The caller rings a
-- doorbell for it and counts the submission (once per batch). The score
-- (1000 - priority) * 2^43 + seq is an exact integer in a double: higher priority first,
-- then submission order, where seq comes from one Redis counter, so equal priorities are
-- FIFO even within one millisecond. `seq`: the job's number where the caller drew it from
-- that counter already (submit_batch.lua draws a batch's at once; nil: drawn here).
-- `chooser` (nil: none) is asked, with ring_for's arguments and the job's score and class,
-- for an idle worker to hand the job to (handoff.lua choose_for_new) before the job is
-- queued; where it names one, the job is queued nowhere and its hash not yet written: it
-- is returned after ring_for's arguments, with `new_job` set to its time limit and its
-- fields (lease_job.lua's `new_job`), for the caller to hand it over, which writes the
-- hash with the lease in one HSET (handoff.lua hand_over). Its
-- position is then the number of pending jobs ranked ahead of it, as ZRANK would give once
-- queued.
local function submit_job(job_id, idem, class_id, priority, first, last, now, seq, chooser)
  if idem ~= '' then
    local existing = redis.call('GET', K.idempotency(idem))
    if existing and redis.call('EXISTS', K.job(existing)) == 1 then
      return found(existing)
    end
  end
  local job_key = K.job(job_id)
  if redis.call('EXISTS', job_key) == 1 then return found(job_id) end

  seq = seq or redis.call('INCR', K.seq)
  local score = int((1000 - tonumber(priority)) * 8796093022208 + seq)
  -- event_seq starts at 1: the 'accepted' event below is the job's first.
  local fields = { 'id', job_id, 'status', 'pending', 'created_at', int(now), 'seq', int(seq),
    'score', score, 'class_id', class_id, 'effective_priority', priority, 'attempts', '0',
    'progress', '0', 'event_seq', '1' }
  local given = {}
  for i = first, last, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
    given[ARGV[i]] = ARGV[i + 1]
  end
  local svc, customer = given['service_type'], given['customer_id'] or ''
  local requirements, preferred = given['requirements'], given['preferred_models']
  local taker = chooser and chooser(now, svc, customer, requirements, preferred,
    tonumber(score), class_id)
  if not taker then
    redis.call('HSET', job_key, unpack(fields))
    redis.call('ZADD', K.pending, score, job_id)
    redis.call('ZADD', K.unclaimed, int(now), job_id)  -- until a worker first claims it
    enqueue_in_class(job_id, score, class_id, svc, customer, requirements, preferred)
  end
  if idem ~= '' then
    redis.call('SET', K.idempotency(idem), job_id, 'PX', retention_ms())
  end
  emit(job_key, job_id, 'accepted', { service_type = svc, priority = tonumber(priority) }, 1,
    customer)
  local position
  if taker then
    position = redis.call('ZCOUNT', K.pending, '-inf', '(' .. score)
    taker.new_job = { timeout_ms = given['timeout_ms'] or false, fields = fields }
  else
    position = redis.call('ZRANK', K.pending, job_id)
  end
  return { 1, job_id, int(now), position }, svc, customer, requirements, preferred, taker
end
