-- cleanup.lua: trim the finished-job registries to the retention window (the fleet's policy).
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- Returns  {completed, failed, cancelled}: entries removed from each registry.
-- Invariants: the job hashes themselves expire by their own TTL (set when they finish);
-- this only drops registry entries older than the retention window, like rq's
-- registry cleanup(). Idempotent. It only removes, so it runs when Redis is at maxmemory
-- too (a Redis Function needs allow-oom for that), when freeing memory matters most.
--- @flags allow-oom

--- @include "common"
--- @include "keys"
--- @include "policy"

local cutoff = now_ms() - retention_ms()
local out = {}
for _, status in ipairs({ 'completed', 'failed', 'cancelled' }) do
  out[#out + 1] = redis.call('ZREMRANGEBYSCORE', K.finished(status), '-inf', cutoff)
end
return out
