-- webhooks.lua: webhook deliveries after a failed attempt: their retry schedule, their dead
-- letter and their events (webhook_defer.lua, webhook_settle.lua, webhook_redeliver.lua).
--
-- A delivery that succeeds at its first attempt never reaches Redis as a record: the hub
-- acknowledges its stream entry and that is all. One that fails gets a `webhook:{id}` hash
-- and is in exactly one of `webhooks:due` (retrying, by the ms its next attempt is due) or
-- `webhooks:failed` (dead-lettered, by the ms it failed), until it is delivered (the hash
-- goes) or its dead letter expires with the retention period.

--- @include "common"
--- @include "keys"

-- Append a delivery event to the stream. Kind 'webhook': the hubs' delivery loop skips
-- every kind but 'job', so a delivery event is never itself delivered, and the hub's
-- fan-out shows it to operators only.
local function emit_webhook(etype, delivery_id, h, data)
  -- In the data too: the hub's live feed passes on a non-job event's data, not its fields.
  data.delivery = delivery_id
  data.job_id = h.job
  redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'webhook', 'type', etype, 'delivery', delivery_id, 'job', h.job or '',
    'customer', h.customer or '', 'data', cjson.encode(data))
end

-- The retry policy a caller passes as four arguments from ARGV[first]: backoff base ms,
-- backoff cap ms, horizon ms (no attempt is scheduled later than this after the
-- delivery's first one) and jitter, a random number in [0, 1) chosen by the caller.
local function retry_policy(first)
  return { base = tonumber(ARGV[first]), cap = tonumber(ARGV[first + 1]),
    horizon = tonumber(ARGV[first + 2]), jitter = tonumber(ARGV[first + 3]) }
end

-- After failed attempt number `attempts` (1: the first), stored in the hash: schedule the
-- next attempt base * 2^(attempts-1), capped, times [0.5, 1.0) from now, or dead-letter the
-- delivery when that would fall past created_at + horizon or the failure is not
-- `retryable` (the target was refused). Returns 'retrying' or 'failed'.
local function retry_or_dead_letter(delivery_id, now, err, status, retryable, policy)
  local key = K.webhook(delivery_id)
  local f = redis.call('HMGET', key, 'attempts', 'created_at', 'job', 'customer')
  local h = { job = f[3], customer = f[4] }
  local attempts = tonumber(f[1])
  local delay = policy.base * (2 ^ (attempts - 1))
  if delay > policy.cap then delay = policy.cap end
  delay = math.floor(delay * (0.5 + 0.5 * policy.jitter))
  redis.call('HSET', key, 'last_error', err, 'last_status', status, 'last_attempt_at', int(now))
  if retryable and now + delay <= tonumber(f[2]) + policy.horizon then
    redis.call('HSET', key, 'status', 'retrying', 'next_attempt_at', int(now + delay))
    redis.call('ZADD', K.webhooks_due, now + delay, delivery_id)
    emit_webhook('webhook_retrying', delivery_id, h,
      { attempts = attempts, error = err, status = tonumber(status), delay_ms = delay })
    return 'retrying'
  end
  redis.call('HSET', key, 'status', 'failed', 'finished_at', int(now))
  redis.call('HDEL', key, 'next_attempt_at')
  redis.call('ZREM', K.webhooks_due, delivery_id)
  redis.call('ZADD', K.webhooks_failed, now, delivery_id)
  redis.call('PEXPIRE', key, RETENTION_MS)
  -- The dead letter keeps itself to the retention window: each addition drops what expired.
  redis.call('ZREMRANGEBYSCORE', K.webhooks_failed, '-inf', now - RETENTION_MS)
  emit_webhook('webhook_failed', delivery_id, h, { attempts = attempts, error = err,
    status = tonumber(status) })
  return 'failed'
end
