-- policy.lua: the fleet's job policy, as the hubs published it in `fleet`.
--
-- Retention of finished jobs, retry backoff and the avoid window define how the fleet
-- treats a job, so they have one source: the hubs' settings, published by
-- publish_policy.lua. A script reads the published value and falls back to what its caller
-- passed only when no hub has published yet (a fresh Redis): a worker's own settings never
-- override the hubs' (RESULT_RETENTION_SECONDS=120 on the hub used to give every job a
-- worker completed that worker's 24 h).

--- @include "common"
--- @include "keys"

-- Read once per call and field: a call is atomic, and complete_claim.lua may finish several
-- jobs in one.
local published = {}
local function begin_policy()
  published = {}
end
local function policy_ms(field, fallback)
  local value = published[field]
  if value == nil then
    value = tonumber(redis.call('HGET', K.fleet, field) or '') or false
    published[field] = value
  end
  if value then return value end
  return fallback
end

local function retention_ms()
  return policy_ms('retention_ms', RETENTION_MS)
end
