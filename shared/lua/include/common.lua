-- common.lua: the calling convention every script shares, and small helpers.
--
-- Common calling convention of every emp-redis script:
--   KEYS[1]  the pool's `jobs:pending` key. Scripts touch more keys than they declare: all of
--            them are built from the prefix (keys.lua), so with a {hash-tag} prefix they share
--            KEYS[1]'s Redis Cluster slot.
--   ARGV[1]  key prefix (may be empty)
--   ARGV[2]  approximate cap of the `events` stream (XADD MAXLEN ~)
--   ARGV[3]  retention of finished jobs, ms (job hash TTL, idempotency keys), used until a
--            hub has published the fleet's policy (include/policy.lua)
--   ARGV[4..] script-specific, documented in each script's header.
-- Times are Redis server time (TIME) in ms, so hubs and workers never compare clocks.

local P = ARGV[1]
local EVENTS_MAX = ARGV[2]
local RETENTION_MS = tonumber(ARGV[3])

-- Read once per call: a call is atomic, so one instant serves all of it (a claim and a
-- completion each asked three times, and complete_claim.lua does several of each).
local NOW_MS = nil
local function now_ms()
  if not NOW_MS then
    local t = redis.call('TIME')
    NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW_MS
end

-- Integers as strings without exponent notation (Lua numbers are doubles).
local function int(x)
  return string.format('%.0f', x)
end

local function val(x)
  if x == cjson.null then return nil end
  return x
end

local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end
