-- sample_depth.lua: record the queue depth of each service for the current minute, once.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4..] service, claimable pending jobs pairs (the hub names only the deepest services
--          and sums the rest under '(other)': shared/minute_stats.py)
-- Returns  1 when recorded, 0 when the minute already has a sample.
-- Invariants: one sample per minute, whichever hub takes it first (`depth_at` is set only
-- if absent, and only with the sample); it lives in the minute's stats hash and expires
-- with it.

--- @include "common"
--- @include "keys"
--- @include "events"

local now = now_ms()
local key = K.stats(int(math.floor(now / 60000)))
if redis.call('HSETNX', key, 'depth_at', int(now)) == 0 then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HSET', key, 'depth:' .. ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', key, STATS_TTL_S)
return 1
