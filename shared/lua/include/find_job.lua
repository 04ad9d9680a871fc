-- find_job.lua: the search for the best job a worker can run, shared by the claim
-- (claim_next.lua, which takes the job) and the peek (peek.lua, which only names it), so the
-- two cannot disagree about which job that is. Everything here reads; nothing writes.

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "queue"
--- @include "choose"
--- @include "fair"
--- @include "fit"

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

-- The indexes of classes worth scanning for this worker: a loose-isolation job locks the
-- worker to its customer; a strict worker serves only its allow-list; anyone else scans by
-- service.
local function scan_indexes(caps, running)
  local customers = nil
  for _, r in ipairs(running) do
    if r.isolation == 'loose' then customers = { r.customer } end
  end
  if not customers and caps.isolation == 'strict' then customers = caps.allowed_list end
  local indexes = {}
  for _, svc in ipairs(caps.services) do
    if customers then
      for _, c in ipairs(customers) do indexes[#indexes + 1] = K.service_classes(svc, c) end
    else
      indexes[#indexes + 1] = K.service_classes(svc)
    end
  end
  return indexes
end

-- The first job of a class `worker_id` may take (not one it is avoiding), or nil.
local function pick(worker_id, class_id, now)
  local ids = redis.call('ZRANGE', K.job_class(class_id), 0, 7)
  for _, id in ipairs(ids) do
    if not avoids(worker_id, id, now) then return id end
  end
  return nil
end

-- The best claimable job `worker_id` can run in strict order (caps: prepare_caps; running:
-- running_of), scanning at most `budget` classes per index from `offset`. Returns {job=,
-- class=, doc=, score=} or nil, and whether some index was cut short by the budget.
-- claim.lua's header states the order and the bounds.
local function find_strict(worker_id, caps, running, budget, offset, now)
  local best = nil
  local truncated = false
  for _, index in ipairs(scan_indexes(caps, running)) do
    local entries = redis.call('ZRANGE', index, offset, offset + budget - 1, 'WITHSCORES')
    local settled = false
    for i = 1, #entries, 2 do
      local class_id, score = entries[i], tonumber(entries[i + 1])
      if best and score >= best.score then settled = true; break end
      local doc = class_doc(class_id)
      if not mismatch(doc.s, doc.c, doc.r, caps, running) then
        local id = pick(worker_id, class_id, now)
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
  return best, truncated
end

-- The effective priority a queue score encodes (submit_job.lua: (1000 - priority) * 2^43 +
-- the submission sequence), so the scan reads no job hash to learn it.
local function score_priority(score)
  return 1000 - math.floor(score / 8796093022208)
end

-- Class `class_id` (document `doc`, head score `score`) as a chooser candidate
-- (include/choose.lua) for the worker with `caps`. Built from the class alone, reading no
-- job: which job it offers is settled only for the chosen class (resolve), so the cost
-- that policies add per class scanned is the class document's read, as for strict order.
-- `job`: the job, where the caller knows it already (peek's due retries).
local function candidate(class_id, doc, score, caps, now, sched, job)
  local models = val(doc.p) or val(doc.r.models) or {}
  local warm = #models > 0
  for _, m in ipairs(models) do
    if not caps.warm[m] then warm = false; break end
  end
  local blocker = nil
  if sched.on.fit then blocker = fit_blocker(doc.s, class_id, doc, caps, now) end
  return { job = job, class = class_id, doc = doc, score = score,
    priority = score_priority(score), customer = doc.c, warm = warm, fit_blocker = blocker }
end

-- How many overdue holds one claim looks at (rule 1 of the chooser). A job is overdue only
-- until the next claim able to run it, so few are at any time.
local OVERDUE_PER_CLAIM = 32

-- Mark the candidates whose class holds a job a bounded policy passed over and whose bound
-- has run out (held_until <= now; K.held indexes them, claim_next.lua record_decision):
-- choose.lua's rule 1 takes them first. One ZRANGEBYSCORE when none is overdue. With
-- `tidy` (a claim; a peek writes nothing) entries of jobs no longer held (claimed by a
-- worker without policies, cancelled, expired) are dropped.
local function mark_overdue(candidates, now, tidy)
  local ids = redis.call('ZRANGEBYSCORE', K.held, '-inf', now, 'LIMIT', 0, OVERDUE_PER_CLAIM)
  if #ids == 0 then return end
  local by_class = {}
  for _, c in ipairs(candidates) do by_class[c.class] = c end
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', K.job(id), 'status', 'class_id', 'held_until')
    if f[1] ~= 'pending' or not f[3] then
      if tidy then redis.call('ZREM', K.held, id) end
    elseif by_class[f[2]] then
      -- The class's head is the held job, or ranks before it: strict order takes it first.
      by_class[f[2]].held_until = tonumber(f[3])
    end
  end
end

-- The candidates for the chooser: per matching class one, down each index to sched.window
-- points below the best priority seen, examining at most sched.scan classes (matching or
-- not) once the first candidate is found and at most `budget` per index (as find_strict),
-- plus `extra` ({id=, class=, doc=, score=} the caller judged already: peek's due retries).
-- So policies add at most sched.scan class reads to what strict order reads. Class documents
-- are read DOCS_PER_READ at a time. Returns them and whether some index was cut short by
-- the budget.
local DOCS_PER_READ = 16
local function gather(caps, running, budget, offset, now, sched, extra)
  local out, truncated, top = {}, false, nil
  -- Classes left to examine once the scan found a candidate (peek's extra ones do not
  -- count: the claim finds them in their classes).
  local left, found = sched.scan, false
  local function add(c)
    out[#out + 1] = c
    if not top or c.priority > top then top = c.priority end
  end
  for _, e in ipairs(extra or {}) do
    add(candidate(e.class, e.doc, e.score, caps, now, sched, e.id))
  end
  for _, index in ipairs(scan_indexes(caps, running)) do
    local entries = redis.call('ZRANGE', index, offset, offset + budget - 1, 'WITHSCORES')
    local settled = false
    local docs = {}
    for i = 1, #entries, 2 do
      local class_id, score = entries[i], tonumber(entries[i + 1])
      -- Heads are in score order: every later class ranks below the window too.
      if top and (score_priority(score) < top - sched.window or left <= 0) then
        settled = true; break
      end
      if found then left = left - 1 end
      local n = (i + 1) / 2
      if not docs[n] then
        local ids = {}
        for j = i, math.min(#entries, i + 2 * DOCS_PER_READ - 2), 2 do
          ids[#ids + 1] = entries[j]
        end
        local read = redis.call('HMGET', K.classes, unpack(ids))
        for k = 1, #read do docs[n + k - 1] = read[k] end
      end
      local doc = cjson.decode(docs[n])
      if not mismatch(doc.s, doc.c, doc.r, caps, running) then
        add(candidate(class_id, doc, score, caps, now, sched))
        found = true
      end
    end
    if not settled and #entries == 2 * budget then truncated = true end
  end
  mark_overdue(out, now, not extra)  -- a peek (which passes `extra`, maybe empty) writes nothing
  return out, truncated
end

-- The job candidate `c` offers `worker_id`: the one the caller named, else its class's
-- first job the worker does not avoid (nil: none).
local function resolve(worker_id, c, now)
  if not c.job then c.job = pick(worker_id, c.class, now) end
  return c.job
end

-- The job the scheduling policies `sched` (choose.lua parse_scheduling; nil: strict order)
-- choose for `worker_id`, scanning as find_strict does. Returns the chosen candidate ({job=,
-- class=, doc=, score=, ...}) or nil, whether the budget cut the scan short, and (policies
-- on, a job found) the decision: {strict=the strict-order best candidate, held=candidate ->
-- policy that passed it over, candidates=all of them}; with no chosen candidate but a
-- decision, fit left every candidate to smaller idle workers. `extra`: as for gather.
local function find_best(worker_id, caps, running, budget, offset, now, sched, extra)
  if not sched then return find_strict(worker_id, caps, running, budget, offset, now) end
  local candidates, truncated = gather(caps, running, budget, offset, now, sched, extra)
  local loads = {}
  if sched.on.fair and #candidates > 0 then
    local seen, customers = {}, {}
    for _, c in ipairs(candidates) do
      if not seen[c.customer] then
        seen[c.customer] = true
        customers[#customers + 1] = c.customer
      end
    end
    loads = customer_loads(customers, now, sched.half_life_ms)
  end
  -- A class whose first jobs this worker all avoids (it just failed them) offers nothing:
  -- drop it and choose again (rare; at most once per candidate).
  while #candidates > 0 do
    local chosen, held = choose(candidates, sched, now, loads)
    if not chosen then
      -- Fit left every candidate to smaller idle workers: nothing is taken here. The
      -- strict-order best is settled so that the claim can record its bound.
      local strict = strict_best(candidates)
      resolve(worker_id, strict, now)
      return nil, truncated, { strict = strict, held = held, candidates = candidates }
    end
    if resolve(worker_id, chosen, now) then
      local strict = strict_best(candidates)
      if strict ~= chosen and held[strict] then resolve(worker_id, strict, now) end
      return chosen, truncated, { strict = strict, held = held, candidates = candidates }
    end
    local rest = {}
    for _, c in ipairs(candidates) do
      if c ~= chosen then rest[#rest + 1] = c end
    end
    candidates = rest
  end
  return nil, truncated
end

-- A job's rank across pools: its effective priority and its submission time (ms). Unlike
-- the score (whose FIFO part is a per-pool sequence) these compare between pools.
local function rank_of(job_id)
  local f = redis.call('HMGET', K.job(job_id), 'effective_priority', 'created_at')
  return tonumber(f[1]) or 0, tonumber(f[2]) or 0
end
