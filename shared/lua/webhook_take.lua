-- webhook_take.lua: a hub takes deliveries whose next attempt is due, under a lease.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  most deliveries to take
-- ARGV[5]  lease ms: a taken delivery is due again this long from now, so a hub that dies
--          while sending it leaves it to the others
-- Returns  {ms until the next due delivery after these ('' when none), then per delivery
--          taken: id, lease token, url, body, attempts so far}.
-- Invariants: a delivery is taken by one hub at a time while its lease lasts; each take
--          bumps the lease token, so the result of an attempt whose lease ran out is
--          refused (webhook_settle.lua); no event (an attempt changes nothing until it is
--          settled); ids whose record is gone leave webhooks:due.

--- @include "common"
--- @include "keys"

local now = now_ms()
local limit, lease = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = { '' }
if limit > 0 then
  local due = redis.call('ZRANGEBYSCORE', K.webhooks_due, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local key = K.webhook(id)
    local f = redis.call('HMGET', key, 'url', 'body', 'attempts')
    if f[1] then
      local token = redis.call('HINCRBY', key, 'lease', 1)
      redis.call('ZADD', K.webhooks_due, now + lease, id)
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      out[#out + 1] = f[3]
    else
      redis.call('ZREM', K.webhooks_due, id)
    end
  end
end
local nxt = redis.call('ZRANGEBYSCORE', K.webhooks_due, '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if nxt[2] then
  local wait = tonumber(nxt[2]) - now
  out[1] = int(wait > 0 and wait or 0)
end
return out
