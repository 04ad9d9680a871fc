-- webhook_redeliver.lua: an operator sends a dead-lettered delivery out again.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  delivery id
-- Returns  'ok', 'not_failed' (it is still being retried) or 'missing'.
-- Invariants: the delivery keeps its id and body (receivers deduplicate by webhook-id);
-- it is due at once with a fresh retry horizon and attempts from 0; its retention TTL is
-- removed while it is live again; it leaves webhooks:failed; a webhook event is written.

--- @include "common"
--- @include "keys"
--- @include "webhooks"

local id = ARGV[4]
local key = K.webhook(id)
local f = redis.call('HMGET', key, 'status', 'job', 'customer')
if not f[1] then return 'missing' end
if f[1] ~= 'failed' then return 'not_failed' end
local now = now_ms()
redis.call('PERSIST', key)
redis.call('ZREM', K.webhooks_failed, id)
redis.call('HSET', key, 'status', 'retrying', 'attempts', 0, 'created_at', int(now),
  'next_attempt_at', int(now))
redis.call('HDEL', key, 'finished_at')
redis.call('ZADD', K.webhooks_due, now, id)
emit_webhook('webhook_redelivered', id, { job = f[2], customer = f[3] }, {})
return 'ok'
