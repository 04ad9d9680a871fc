-- events.lua: what the hub watches: the capped `events` stream and per-minute counters.

--- @include "common"
--- @include "keys"

local function bump_stat(now, field, by)
  local key = K.stats(int(math.floor(now / 60000)))
  if redis.call('HINCRBY', key, field, by or 1) == (by or 1) then
    redis.call('EXPIRE', key, 86400)
  end
end

-- Append a job event to the stream; per-job `seq` orders a job's events without gaps.
-- A caller that already knows them passes `seq` (having stored it as event_seq) and
-- `customer`, saving two reads of the job hash.
local function emit(job_key, job_id, etype, data, seq, customer)
  seq = seq or redis.call('HINCRBY', job_key, 'event_seq', 1)
  customer = customer or redis.call('HGET', job_key, 'customer_id') or ''
  redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'job', 'type', etype, 'job', job_id, 'seq', seq, 'customer', customer,
    'data', cjson.encode(data))
end

local function emit_worker(worker_id, etype, data)
  redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAX, '*',
    'kind', 'worker', 'type', etype, 'worker', worker_id, 'data', cjson.encode(data))
end
