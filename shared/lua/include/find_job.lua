-- find_job.lua: the search for the best job a worker can run, shared by the claim
-- (claim_next.lua, which takes the job) and the peek (peek.lua, which only names it), so the
-- two cannot disagree about which job that is. Everything here reads; nothing writes.

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "queue"

-- How many due retries one claim moves into their classes (promote_due), and so how many a
-- peek judges where they wait: the same bound keeps the two answers the same.
local DUE_PER_CLAIM = 100

-- The leases a worker holds, as {customer=, isolation=} entries (for customer isolation;
-- the lease format is in leases.lua), plus `elsewhere`: the same entries as JSON for the
-- leases it holds in its other pools ('' or nil: none), which no script of this pool can
-- read (on a Redis Cluster they live in other slots) but isolation must still count.
local function running_of(lease_key, elsewhere)
  local out = {}
  local flat = redis.call('HGETALL', lease_key)
  for i = 2, #flat, 2 do
    local f = split(flat[i], '|')
    out[#out + 1] = { customer = f[2] or '', isolation = f[3] or 'none' }
  end
  if elsewhere and elsewhere ~= '' then
    for _, r in ipairs(cjson.decode(elsewhere)) do
      out[#out + 1] = { customer = val(r.customer) or '', isolation = val(r.isolation) or 'none' }
    end
  end
  return out
end

-- Why `worker_id` may claim nothing here whatever is pending: its operator state ('paused',
-- 'draining'), or 'limit' when it holds `max_leases` leases already (0 or nil: no cap).
-- nil when it may claim.
local function claim_barrier(worker_id, max_leases)
  local state = redis.call('HGET', K.worker(worker_id), 'state')
  if state == 'paused' or state == 'draining' then return state end
  -- A gateway worker's grant caps the leases it holds. Checked inside the claim itself, so
  -- two claims at once (through two hubs) cannot both pass the cap.
  if (max_leases or 0) > 0 and redis.call('HLEN', K.leases(worker_id)) >= max_leases then
    return 'limit'
  end
  return nil
end

-- Whether `worker_id`, which just failed job `id`, is still to pass it over (the avoidance
-- window after a retry becomes due).
local function avoids(worker_id, id, now)
  local a = redis.call('HMGET', K.job(id), 'avoid_worker', 'avoid_until')
  return a[1] == worker_id and tonumber(a[2] or '0') > now
end

-- The best claimable job `worker_id` can run (caps: prepare_caps; running: running_of),
-- scanning at most `budget` classes per index from `offset`. Returns {job=, class=, doc=,
-- score=} or nil, and whether some index was cut short by the budget. claim.lua's header
-- states the order and the bounds.
local function find_best(worker_id, caps, running, budget, offset, now)
  -- Customers whose classes are worth scanning: a loose-isolation job locks the worker to
  -- its customer; a strict worker serves only its allow-list; anyone else scans by service.
  local customers = nil
  for _, r in ipairs(running) do
    if r.isolation == 'loose' then customers = { r.customer } end
  end
  if not customers and caps.isolation == 'strict' then customers = caps.allowed_list end

  -- The first job of a class this worker may take.
  local function pick(class_id)
    local ids = redis.call('ZRANGE', K.job_class(class_id), 0, 7)
    for _, id in ipairs(ids) do
      if not avoids(worker_id, id, now) then return id end
    end
    return nil
  end

  local best = nil
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
        if best and score >= best.score then settled = true; break end
        local doc = class_doc(class_id)
        if not mismatch(doc.s, doc.c, doc.r, caps, running) then
          local id = pick(class_id)
          if id then
            local job_score = tonumber(redis.call('ZSCORE', K.job_class(class_id), id))
            if not best or job_score < best.score then
              best = { job = id, class = class_id, doc = doc, score = job_score }
            end
            -- The class's head: nothing later in this index ranks higher. A job behind a
            -- head this worker avoids may rank below the next classes' heads: go on until
            -- a class's head ranks below it (the check above).
            if job_score == score then settled = true; break end
          end
        end
      end
      if not settled and #entries == 2 * budget then truncated = true end
    end
  end
  return best, truncated
end

-- A job's rank across pools: its effective priority and its submission time (ms). Unlike
-- the score (whose FIFO part is a per-pool sequence) these compare between pools.
local function rank_of(job_id)
  local f = redis.call('HMGET', K.job(job_id), 'effective_priority', 'created_at')
  return tonumber(f[1]) or 0, tonumber(f[2]) or 0
end
