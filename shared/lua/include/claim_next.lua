-- claim_next.lua: the claim (claim.lua, complete_claim.lua).

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "events"
--- @include "queue"

-- Leases a worker holds, as {customer=, isolation=} entries (for customer isolation; the
-- lease format is in leases.lua). Only the claim reads leases this way.
local function running_of(lease_key)
  local out = {}
  local flat = redis.call('HGETALL', lease_key)
  for i = 2, #flat, 2 do
    local f = split(flat[i], '|')
    out[#out + 1] = { customer = f[2] or '', isolation = f[3] or 'none' }
  end
  return out
end

-- Take the best pending job `worker_id` can run, under a lease. Returns {'job', token,
-- field1, value1, ...} or {'none', reason, next_due_ms, next_offset}; claim.lua's header
-- states the contract and the invariants.
local function claim_next(worker_id, caps_json, budget, offset, hops, max_leases)
  local state = redis.call('HGET', K.worker(worker_id), 'state')
  if state == 'paused' or state == 'draining' then return { 'none', state, '', '' } end
  -- A gateway worker's grant caps the leases it holds (0: no cap). Checked here, in the
  -- claim itself, so two claims at once (through two hubs) cannot both pass the cap.
  -- (Absent, as from a caller that predates it: no cap.)
  if (max_leases or 0) > 0 and redis.call('HLEN', K.leases(worker_id)) >= max_leases then
    return { 'none', 'limit', '', '' }
  end

  local now = now_ms()
  promote_due(now, 100)
  local caps = prepare_caps(caps_json)
  local lease_key = K.leases(worker_id)
  local running = running_of(lease_key)

  -- Customers whose classes are worth scanning: a loose-isolation job locks the worker to
  -- its customer; a strict worker serves only its allow-list; anyone else scans by service.
  local customers = nil
  for _, r in ipairs(running) do
    if r.isolation == 'loose' then customers = { r.customer } end
  end
  if not customers and caps.isolation == 'strict' then customers = caps.allowed_list end

  -- The first job of a class this worker may take: a worker that just failed a job is
  -- passed over while its avoidance window lasts.
  local function pick(class_id)
    local ids = redis.call('ZRANGE', K.job_class(class_id), 0, 7)
    for _, id in ipairs(ids) do
      local a = redis.call('HMGET', K.job(id), 'avoid_worker', 'avoid_until')
      if a[1] ~= worker_id or tonumber(a[2] or '0') <= now then return id end
    end
    return nil
  end

  local best_score, best_job, best_class, best_doc = nil, nil, nil, nil
  local truncated = false
  for _, svc in ipairs(caps.services) do
    local indexes = {}
    if customers then
      for _, c in ipairs(customers) do indexes[#indexes + 1] = K.service_classes(svc, c) end
    else
      indexes[1] = K.service_classes(svc)
    end
    for _, index in ipairs(indexes) do
      local entries = redis.call('ZRANGE', index, offset, offset + budget - 1, 'WITHSCORES')
      local settled = false
      for i = 1, #entries, 2 do
        local class_id, score = entries[i], tonumber(entries[i + 1])
        if best_score and score >= best_score then settled = true; break end
        local doc = class_doc(class_id)
        if not mismatch(doc.s, doc.c, doc.r, caps, running) then
          local id = pick(class_id)
          if id then
            best_score = tonumber(redis.call('ZSCORE', K.job_class(class_id), id))
            best_job, best_class, best_doc = id, class_id, doc
            settled = true
            break
          end
        end
      end
      if not settled and #entries == 2 * budget then truncated = true end
    end
  end

  if not best_job then
    if hops > 0 then
      -- Woken for work this worker cannot do: pass the wake-up on to another idle worker.
      for _, svc in ipairs(caps.services) do
        if redis.call('ZCARD', K.service_classes(svc)) > 0 then notify(svc, hops - 1) end
      end
    end
    local due = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
    if truncated then return { 'none', 'more', due[2] or '', int(offset + budget) } end
    return { 'none', 'empty', due[2] or '', '' }
  end

  local job_key = K.job(best_job)
  local svc, customer = best_doc.s, best_doc.c
  redis.call('ZREM', K.job_class(best_class), best_job)
  redis.call('ZREM', K.pending, best_job)
  redis.call('ZREM', K.unclaimed, best_job)
  refresh_class(best_class, svc, customer)
  local token = int(redis.call('INCR', K.tokens))
  local isolation = val(best_doc.r.customer_isolation) or 'none'
  redis.call('HSET', job_key, 'status', 'active', 'worker_id', worker_id, 'token', token,
    'claimed_at', int(now), 'progress', '0', 'message', '')
  redis.call('HDEL', job_key, 'avoid_worker', 'avoid_until', 'retry_at')
  redis.call('HSET', lease_key, best_job, token .. '|' .. customer .. '|' .. isolation .. '|' .. int(now))
  local timeout_ms = tonumber(redis.call('HGET', job_key, 'timeout_ms') or '1800000')
  redis.call('ZADD', K.active, now + timeout_ms, best_job)
  redis.call('HINCRBY', K.worker(worker_id), 'claimed', 1)
  bump_stat(now, 'claimed')
  local wait_ms = now - tonumber(redis.call('HGET', job_key, 'created_at'))
  bump_wait(now, wait_ms)
  emit(job_key, best_job, 'claimed', { worker_id = worker_id, wait_ms = wait_ms })
  -- More work of this service is waiting: wake one more idle worker (at most one token is
  -- left lying around when nobody is idle).
  if redis.call('ZCARD', K.service_classes(svc)) > 0
      and redis.call('LLEN', K.notify(svc)) == 0 then
    notify(svc, 3)
  end
  local reply = { 'job', token }
  local flat = redis.call('HGETALL', job_key)
  for i = 1, #flat do reply[#reply + 1] = flat[i] end
  return reply
end
