-- publish_policy.lua: a hub publishes the fleet's job policy (its settings) for every script.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  retention of finished jobs, ms (RESULT_RETENTION_SECONDS)
-- ARGV[5]  retry backoff base, ms (RETRY_BACKOFF_SECONDS)
-- ARGV[6]  retry backoff cap, ms (RETRY_BACKOFF_MAX_SECONDS)
-- ARGV[7]  avoid window, ms (RETRY_AVOID_SECONDS)
-- ARGV[8]  the publishing hub's name (for the log of a hub that finds another's values)
-- ARGV[9..] fair-share weights as customer, weight pairs ("*": any customer not named;
--          FAIR_SHARE_WEIGHTS with HUB_CUSTOMERS), replacing the published ones
-- Returns  the values published before, in the same order and with the publisher's name,
--          each false when none was.
-- Invariants: idempotent (every hub publishes at start and on every maintenance tick, so
-- the policy is back soon after Redis lost it); the last hub to publish wins, so hubs must
-- agree, and one that finds another's different values logs it. Scripts read the policy
-- through include/policy.lua, and the weights through include/fair.lua.

--- @include "keys"
--- @include "fair"

local fields = { 'retention_ms', 'backoff_ms', 'backoff_max_ms', 'avoid_ms', 'by' }
local before = redis.call('HMGET', K.fleet, unpack(fields))
redis.call('HSET', K.fleet, 'retention_ms', ARGV[4], 'backoff_ms', ARGV[5], 'backoff_max_ms',
  ARGV[6], 'avoid_ms', ARGV[7], 'by', ARGV[8])
publish_weights(ARGV, 9)
return before
