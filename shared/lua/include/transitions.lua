-- transitions.lua: where a job goes when it stops running, shared by several scripts: done
-- for good (finish), back to pending after a failure (retry_or_fail), or back to pending at
-- no cost (put_back).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"
--- @include "policy"
--- @include "fair"

-- What a finished job no longer has: its lease's token, a backoff, a fair-share mark.
local FINISH_CLEARS = { 'token', 'retry_at', 'fair_charge' }
-- No fields to write beside the status (finish's `fields` nil). Never written to.
local NO_FIELDS = {}

-- Finish a job for good: status, timestamps, registry, retention TTL (the fleet's policy).
-- `fields` (name, value, ... or nil) are written in the same HSET; `known` is
-- charge_usage's (fair.lua), for a caller that read the job's fields already; `clears` the
-- fields to delete, where the caller knows which of FINISH_CLEARS the job has (nil: all).
local function finish(job_key, job_id, status, now, fields, known, clears)
  charge_usage(job_key, known)
  redis.call('HSET', job_key, 'status', status, 'finished_at', int(now),
    unpack(fields or NO_FIELDS))
  redis.call('HDEL', job_key, unpack(clears or FINISH_CLEARS))
  redis.call('ZREM', K.active, job_id)
  redis.call('ZADD', K.finished(status), int(now), job_id)
  redis.call('PEXPIRE', job_key, int(retention_ms()))
end

-- Back to pending after a failure or a lost lease, or failed for good once `max_retries`
-- retries are used up or at once when the failure is not `retryable`. `attempts` counts
-- the runs actually made (this one included) either way, so a job rejected on its first run
-- shows 1, not the retries it never used. Backoff is exponential with jitter:
-- base * 2^(attempts-1), capped, times [0.5, 1.0). The worker that failed is avoided until
-- `avoid_ms` after the job is due again, so another capable worker gets it first; it is not
-- banned. Returns 'retrying' or 'failed'.
local function retry_or_fail(job_key, job_id, now, err, retryable, base_ms, cap_ms, jitter,
    avoid_worker, avoid_ms)
  local f = redis.call('HMGET', job_key, 'attempts', 'max_retries', 'score')
  local attempts = tonumber(f[1] or '0') + 1
  redis.call('HSET', job_key, 'attempts', attempts, 'error', err)
  charge_usage(job_key)
  redis.call('HDEL', job_key, 'token')
  redis.call('ZREM', K.active, job_id)
  if not retryable or attempts > tonumber(f[2] or '0') then
    finish(job_key, job_id, 'failed', now)
    bump_stat(now, 'failed')
    emit(job_key, job_id, 'failed', { error = err, attempts = attempts })
    return 'failed'
  end
  local delay = base_ms * (2 ^ (attempts - 1))
  if delay > cap_ms then delay = cap_ms end
  delay = math.floor(delay * (0.5 + 0.5 * jitter))
  redis.call('HSET', job_key, 'status', 'pending', 'progress', '0', 'message', '',
    'avoid_worker', avoid_worker, 'avoid_until', int(now + delay + avoid_ms))
  redis.call('ZADD', K.pending, f[3], job_id)
  if delay > 0 then
    redis.call('HSET', job_key, 'retry_at', int(now + delay))
    redis.call('ZADD', K.delayed, now + delay, job_id)
  else
    ring_for(now, enqueue_claimable(job_key, job_id))
  end
  bump_stat(now, 'retried')
  emit(job_key, job_id, 'retrying', { error = err, attempts = attempts, delay_ms = delay })
  return 'retrying'
end

-- Return an active job to pending without an attempt penalty (graceful stop, lost claim
-- reply). The caller has checked that `worker_id` holds it and removes the lease itself.
local function put_back(job_key, job_id, worker_id, reason)
  charge_usage(job_key)
  redis.call('HSET', job_key, 'status', 'pending', 'progress', '0', 'message', '')
  redis.call('HDEL', job_key, 'token')
  redis.call('ZREM', K.active, job_id)
  redis.call('ZADD', K.pending, redis.call('HGET', job_key, 'score'), job_id)
  ring_for(now_ms(), enqueue_claimable(job_key, job_id))
  emit(job_key, job_id, 'released', { worker_id = worker_id, reason = reason })
end
