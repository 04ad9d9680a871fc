-- events.lua: what the hub watches: the capped `events` stream and per-minute counters.

--- @include "common"
--- @include "keys"

-- Per-minute hashes are kept a day (shared/minute_stats.py says what they hold).
local STATS_TTL_S = 86400

local function bump_stat(now, field, by)
  if by == 0 then return end  -- nothing to add (a no-op job's run_ms); nor a TTL to set
  local key = K.stats(int(math.floor(now / 60000)))
  if redis.call('HINCRBY', key, field, by and int(by) or '1') == (by or 1) then
    redis.call('EXPIRE', key, STATS_TTL_S)
  end
end

-- The wait histogram's bucket (the twin of shared.minute_stats.wait_bucket): exact below
-- 4 ms, then four buckets per doubling. frexp is exact on integers, so both sides agree.
local function wait_bucket(ms)
  if ms < 4 then return math.max(0, math.floor(ms)) end
  local mantissa, exponent = math.frexp(ms)
  return 4 * exponent - 12 + math.floor(mantissa * 8)
end

-- Count a claim's wait in its minute's histogram: one HINCRBY, so wait percentiles per
-- minute cost the claim next to nothing.
local function bump_wait(now, wait_ms)
  bump_stat(now, 'wait:' .. int(wait_bucket(wait_ms)))
end

-- Append a job event to the stream; per-job `seq` orders a job's events without gaps.
-- A caller that already knows them passes `seq` (having stored it as event_seq) and
-- `customer`, saving two reads of the job hash.
local function emit(job_key, job_id, etype, data, seq, customer)
  seq = seq or redis.call('HINCRBY', job_key, 'event_seq', 1)
  customer = customer or redis.call('HGET', job_key, 'customer_id') or ''
  redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'job', 'type', etype, 'job', job_id, 'seq', int(seq), 'customer', customer,
    'data', cjson.encode(data))
end

local function emit_worker(worker_id, etype, data)
  redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'worker', 'type', etype, 'worker', worker_id, 'data', cjson.encode(data))
end
