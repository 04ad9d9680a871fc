-- queue.lua: the pending structures and the doorbell.
--
-- A pending, claimable job sits in its class ZSET; each class sits in classes:{service} and
-- classes:{service}:{customer}, scored by its best (lowest) job score. A retry backing off
-- sits in jobs:delayed instead of its class until it is due. Every pending job, claimable or
-- not, is in jobs:pending; one no worker has claimed yet is also in jobs:unclaimed.

--- @include "common"
--- @include "keys"
--- @include "idle_workers"

-- Ring the service's doorbell so one idle worker wakes; `hops` is how often a worker that
-- cannot use the wake-up passes it on. The list is capped: tokens nobody waits for expire
-- into at most 64 spurious claims.
local function notify(svc, hops, count)
  local key = K.notify(svc)
  local tokens = {}
  for i = 1, math.min(count or 1, 64) do tokens[i] = hops end
  if redis.call('LPUSH', key, unpack(tokens)) > 64 then redis.call('LTRIM', key, 0, 63) end
end

-- A job of service `svc` became claimable: wake a worker for it. Where it prefers models
-- (`preferred`, its preferred_models JSON, or nil/false/'') and an idle worker whose claims
-- apply affinity has them all warm, that worker's own doorbell (idle_workers.lua
-- wake_warm), so the job is taken warm; otherwise the service's, as for any job. Returns
-- whether a warm worker was woken.
local function ring_for(now, svc, customer, requirements, preferred)
  if preferred and preferred ~= '' then
    local models = cjson.decode(preferred)
    if #models > 0 and wake_warm(svc, customer or '', requirements, models, now) then
      return true
    end
  end
  notify(svc, 3)
  return false
end

-- Re-score a class in its service indexes after its head changed; drop it when empty.
local function refresh_class(class_id, svc, customer)
  local head = redis.call('ZRANGE', K.job_class(class_id), '0', '0', 'WITHSCORES')
  local by_service = K.service_classes(svc)
  local by_customer = K.service_classes(svc, customer)
  if head[1] then
    redis.call('ZADD', by_service, head[2], class_id)
    redis.call('ZADD', by_customer, head[2], class_id)
  else
    redis.call('ZREM', by_service, class_id)
    redis.call('ZREM', by_customer, class_id)
    redis.call('HDEL', K.classes, class_id)
  end
end

-- Make a pending job claimable (submit, retry, release, promotion of a due retry). The
-- class document is (re)written here because an emptied class drops its document while
-- a retry of one of its jobs may still be backing off. `preferred` is the job's
-- preferred_models field (a JSON list, or nil/false/'' for none): the document's "p",
-- which claims may prefer and the matcher never reads. Returns the job's service, customer,
-- requirements and preferred models (ring_for's arguments after `now`).
local function enqueue_in_class(job_id, score, class_id, svc, customer, requirements,
                                preferred)
  redis.call('ZADD', K.job_class(class_id), score, job_id)
  local by_service = K.service_classes(svc)
  local best = redis.call('ZSCORE', by_service, class_id)
  if not best then
    local p = ''
    if preferred and preferred ~= '' then p = ',"p":' .. preferred end
    redis.call('HSETNX', K.classes, class_id, '{"s":' .. cjson.encode(svc) .. ',"c":'
      .. cjson.encode(customer) .. ',"r":' .. requirements .. p .. '}')
  end
  if not best or tonumber(best) > tonumber(score) then
    redis.call('ZADD', by_service, score, class_id)
    redis.call('ZADD', K.service_classes(svc, customer), score, class_id)
  end
  return svc, customer, requirements, preferred
end

local function enqueue_claimable(job_key, job_id)
  local f = redis.call('HMGET', job_key, 'score', 'class_id', 'service_type', 'customer_id',
    'requirements', 'preferred_models')
  return enqueue_in_class(job_id, f[1], f[2], f[3], f[4] or '', f[5], f[6])
end

-- Take a job out of every pending structure (claimable or backing off).
local function unqueue(job_key, job_id)
  local f = redis.call('HMGET', job_key, 'class_id', 'service_type', 'customer_id')
  redis.call('ZREM', K.pending, job_id)
  redis.call('ZREM', K.delayed, job_id)
  redis.call('ZREM', K.unclaimed, job_id)
  if redis.call('ZREM', K.job_class(f[1]), job_id) == 1 then
    refresh_class(f[1], f[2], f[3] or '')
  end
end

-- Move retries whose backoff has elapsed into their classes (bounded per call).
local function promote_due(now, limit)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', int(now), 'LIMIT', '0', int(limit))
  for _, job_id in ipairs(due) do
    local job_key = K.job(job_id)
    redis.call('ZREM', K.delayed, job_id)
    if redis.call('HGET', job_key, 'status') == 'pending' then
      redis.call('HDEL', job_key, 'retry_at')
      ring_for(now, enqueue_claimable(job_key, job_id))
    end
  end
  return #due
end
