-- common.lua: the calling convention every script shares, and small helpers.
--
-- Common calling convention of every emp-redis script (a Redis Function, or the same code
-- sent with EVALSHA: shared/lua_source.py):
--   KEYS[1]  the pool's `jobs:pending` key. Scripts touch more keys than they declare: all of
--            them are built from the prefix (keys.lua), so with a {hash-tag} prefix they share
--            KEYS[1]'s Redis Cluster slot.
--   ARGV[1]  key prefix (may be empty)
--   ARGV[2]  approximate cap of the `events` stream (XADD MAXLEN ~)
--   ARGV[3]  retention of finished jobs, ms (job hash TTL, idempotency keys), used until a
--            hub has published the fleet's policy (include/policy.lua)
--   ARGV[4..] script-specific, documented in each script's header.
-- Times are Redis server time (TIME) in ms, so hubs and workers never compare clocks.

--
-- Per-call state: the helpers are made once, when Redis loads the library, and outlive a
-- call; so what belongs to one call lives in upvalues that a `begin_<include>` function sets
-- at the start of every call (shared/lua_source.py calls every include's, in include order).
-- An include keeps nothing else between calls except constants and memos: caches of a pure
-- function of their key (a document's text), bounded, named `*_memo*`, which a call may
-- find filled by an earlier one (or, sent with EVALSHA, empty).
local KEYS, ARGV = nil, nil
local P, EVENTS_MAX, RETENTION_MS

-- Read once per call: a call is atomic, so one instant serves all of it (a claim and a
-- completion each asked three times, and complete_claim.lua does several of each).
local NOW_MS = nil

local function begin_common(keys, argv)
  KEYS, ARGV = keys, argv
  P, EVENTS_MAX, RETENTION_MS = argv[1], argv[2], tonumber(argv[3])
  NOW_MS = nil
end
local function now_ms()
  if not NOW_MS then
    local t = redis.call('TIME')
    NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW_MS
end

-- Integers as strings without exponent notation (Lua numbers are doubles). A whole number
-- below 2^53 is formatted as a C integer ('%d'): '%.0f' takes glibc's multi-precision float
-- path, the dearest part of formatting a millisecond time; any other value is rounded.
-- The scripts pass numbers to redis.call as text made here, and constants as text literals:
-- Redis 7.0 formats a Lua number argument with '%.17g', by the same float path, and that
-- was about 8% of a claim's instructions (`python -m bench instructions`, README).
-- Even '%d' costs a string.format call, a sprintf and a new string each time (about 2,800
-- cycles, measured per Lua line), and a call formats the same few numbers again and again:
-- its `now` five times or more, its minute, small event numbers. So the text is kept in a
-- memo of two generations of INT_MEMO_MAX numbers, where a repeat costs one table read.
-- It is new_memo's (below), inlined: through memoized, a function call more per number
-- cost 1.5-2.7% of each hot path's instructions (bench instructions). NaN, which no table may hold
-- as a key, is formatted each time.
local INT_MEMO_MAX = 512
local int_memo_newer, int_memo_older, int_memo_size = {}, {}, 0
local function int(x)
  local text = int_memo_newer[x]
  if text then return text end
  if x ~= x then return string.format('%.0f', x) end
  text = int_memo_older[x]
  if not text then
    if x % 1 == 0 and x < 9007199254740992 and x > -9007199254740992 then
      text = string.format('%d', x)
    else
      text = string.format('%.0f', x)
    end
  end
  if int_memo_size >= INT_MEMO_MAX then
    int_memo_newer, int_memo_older, int_memo_size = {}, int_memo_newer, 0
  end
  int_memo_newer[x] = text
  int_memo_size = int_memo_size + 1
  return text
end

local function val(x)
  if x == cjson.null then return nil end
  return x
end

-- A memo (see above): a bounded cache of pure function `make` of a text. Two generations of
-- at most `max` texts each: when the newer is full it becomes the older and the oldest
-- goes, so the texts in use stay. Made at library load, kept between calls.
local function new_memo(max)
  return { newer = {}, older = {}, size = 0, max = max }
end

-- `make(text)`, from `memo` where it holds it.
local function memoized(memo, text, make)
  local value = memo.newer[text]
  if value ~= nil then return value end
  value = memo.older[text]
  if value == nil then value = make(text) end
  if memo.size >= memo.max then
    memo.newer, memo.older, memo.size = {}, memo.newer, 0
  end
  memo.newer[text] = value
  memo.size = memo.size + 1
  return value
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
