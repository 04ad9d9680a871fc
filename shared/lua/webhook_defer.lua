-- webhook_defer.lua: first attempts that failed: record each delivery and schedule its retry.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4..7] retry policy: backoff base ms, backoff cap ms, horizon ms (retries stop this
--          long after the first attempt), jitter in [0, 1) (include/webhooks.lua)
-- ARGV[8]  number of deliveries N
-- ARGV[9..] N groups of 9: delivery id, url, body, event type, job id, customer ('' none),
--          error, HTTP status ('' when there was no answer), '1' retryable or '0' not (the
--          target was refused: dead-lettered at once)
-- Returns  one outcome per delivery, in order: 'retrying', 'failed' (dead-lettered) or
--          'exists' (a record with that id exists already: it is left as it is).
-- Invariants: a delivery id has at most one record, so a stream entry processed twice (its
-- hub died before acknowledging it) never schedules a delivery twice; each record is in
-- webhooks:due or webhooks:failed, never both; every change writes a webhook event. The
-- caller acknowledges the stream entry after this call.

--- @include "common"
--- @include "keys"
--- @include "webhooks"

local policy = retry_policy(4)
local now = now_ms()
local out, pos = {}, 9
for _ = 1, tonumber(ARGV[8]) do
  local id = ARGV[pos]
  local key = K.webhook(id)
  if redis.call('EXISTS', key) == 1 then
    out[#out + 1] = 'exists'
  else
    redis.call('HSET', key, 'id', id, 'url', ARGV[pos + 1], 'body', ARGV[pos + 2],
      'event', ARGV[pos + 3], 'job', ARGV[pos + 4], 'customer', ARGV[pos + 5],
      'attempts', 1, 'created_at', int(now), 'lease', 0)
    out[#out + 1] = retry_or_dead_letter(id, now, ARGV[pos + 6], ARGV[pos + 7],
      ARGV[pos + 8] == '1', policy)
  end
  pos = pos + 9
end
return out
