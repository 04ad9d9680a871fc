-- webhook_settle.lua: the outcome of an attempt a hub made under its lease (webhook_take.lua).
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  delivery id
-- ARGV[5]  lease token the hub took it with
-- ARGV[6]  'delivered', or the error of a failed attempt
-- ARGV[7]  HTTP status of the answer ('' when there was none)
-- ARGV[8]  '1' retryable or '0' not (the target was refused)
-- ARGV[9..12] retry policy (include/webhooks.lua)
-- Returns  'delivered', 'retrying', 'failed' (dead-lettered) or 'stale' (nothing changes:
--          the lease ran out and another hub took the delivery, or it is no longer retrying).
-- Invariants: fenced by the lease token, so each attempt is settled once and a slow hub
-- cannot overwrite a newer attempt; a delivered record is deleted; attempts + 1 per failed
-- attempt; every change writes a webhook event.

--- @include "common"
--- @include "keys"
--- @include "webhooks"

local id = ARGV[4]
local key = K.webhook(id)
local f = redis.call('HMGET', key, 'lease', 'status', 'attempts', 'job', 'customer')
if f[1] ~= ARGV[5] or f[2] ~= 'retrying' then return 'stale' end
local now = now_ms()
if ARGV[6] == 'delivered' then
  redis.call('DEL', key)
  redis.call('ZREM', K.webhooks_due, id)
  emit_webhook('webhook_delivered', id, { job = f[4], customer = f[5] },
    { attempts = tonumber(f[3]) + 1, status = tonumber(ARGV[7]) })
  return 'delivered'
end
redis.call('HINCRBY', key, 'attempts', 1)
return retry_or_dead_letter(id, now, ARGV[6], ARGV[7], ARGV[8] == '1', retry_policy(9))
