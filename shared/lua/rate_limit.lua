-- rate_limit.lua: take one request from a client token's bucket (a token bucket kept in
-- Redis, so every hub draws from the same one).
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  bucket id: the sha256 of the token (never the token itself)
-- ARGV[5]  refill rate, requests per second (> 0)
-- ARGV[6]  burst: the most requests the bucket holds
-- ARGV[7]  cost of this request (1)
-- Returns  {1, 0} when the request may go ahead, {0, retry_after_ms} when the bucket is
--          short: the request must wait that long for enough to have refilled.
-- Invariants: the bucket refills continuously at the rate, never above the burst, by Redis
-- time, so hubs with different clocks agree; a refused request takes nothing; the key
-- expires once it would be full again anyway, so idle tokens leave nothing behind.

--- @include "common"
--- @include "keys"

local key = K.rate_limit(ARGV[4])
local rate, burst, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local f = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(f[1] or burst)
local at = tonumber(f[2] or now)
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local allowed, wait_ms = 1, 0
if tokens >= cost then
  tokens = tokens - cost
else
  allowed = 0
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', int(math.max(now, at)))
redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
return { allowed, wait_ms }
