-- fair.lua: fair-share usage, per customer, in GPU-seconds with exponential decay (the same
-- arithmetic as shared/scheduling/usage.py). K.fair_usage holds "value|ms" per customer,
-- decayed to now on every read and write; K.fair_weights the weights the hubs publish.

--- @include "common"
--- @include "keys"

-- A stored "value|ms" decayed to `now` (nil: none); a half-life of 0 keeps no usage.
local function decayed(stored, now, half_life_ms)
  if not stored or half_life_ms <= 0 then return 0 end
  local f = split(stored, '|')
  local elapsed = now - (tonumber(f[2]) or 0)
  if elapsed < 0 then elapsed = 0 end
  return (tonumber(f[1]) or 0) * 2 ^ (-elapsed / half_life_ms)
end

-- Replace the published weights with the customer, weight pairs in `args` from `first` on
-- (publish_policy.lua).
local function publish_weights(args, first)
  redis.call('DEL', K.fair_weights)
  if #args >= first + 1 then redis.call('HSET', K.fair_weights, unpack(args, first)) end
end

-- customer -> usage / weight for the (distinct, non-empty list of) `customers`. A customer
-- without a published weight has the weight of '*' (customers in no tier), else 1.
local function customer_loads(customers, now, half_life_ms)
  local usage = redis.call('HMGET', K.fair_usage, unpack(customers))
  local weights = redis.call('HMGET', K.fair_weights, '*', unpack(customers))
  local default = tonumber(weights[1]) or 1
  local loads = {}
  for i, c in ipairs(customers) do
    local w = tonumber(weights[i + 1]) or default
    if w <= 0 then w = 1 end
    loads[c] = decayed(usage[i], now, half_life_ms) / w
  end
  return loads
end

-- Where a lease ends (finished, failed, retried, put back): charge the job's customer its
-- GPUs x the seconds it ran, if a claim with fair share on marked it ('fair_charge' =
-- "gpus|half_life_ms"). The mark is removed, so a lease is charged once. `known`, when the
-- caller has read them already (complete_job.lua), holds the job's fair_charge, claimed_at
-- and customer_id ({charge=, claimed_at=, customer=}; false fields: absent), saving reads.
local function charge_usage(job_key, known)
  local charge, claimed_at, customer
  if known then
    charge = known.charge
    if not charge then return end
    claimed_at, customer = known.claimed_at, known.customer
  else
    charge = redis.call('HGET', job_key, 'fair_charge')
    if not charge then return end
    local f = redis.call('HMGET', job_key, 'claimed_at', 'customer_id')
    claimed_at, customer = f[1], f[2]
  end
  local now = now_ms()
  -- With `known` the caller is finish (transitions.lua), whose HDEL drops the charge.
  if not known then redis.call('HDEL', job_key, 'fair_charge') end
  local c = split(charge, '|')
  local gpus, half_life_ms = tonumber(c[1]) or 1, tonumber(c[2]) or 0
  local ran_s = (now - (tonumber(claimed_at) or now)) / 1000
  if ran_s < 0 then ran_s = 0 end
  customer = customer or ''
  local value = decayed(redis.call('HGET', K.fair_usage, customer), now, half_life_ms)
    + gpus * ran_s
  redis.call('HSET', K.fair_usage, customer, string.format('%.6f', value) .. '|' .. int(now))
end
