-- find_job.lua: the search for the best job a worker can run, shared by the claim
-- (claim_next.lua, which takes the job) and the peek (peek.lua, which only names it), so the
-- two cannot disagree about which job that is. Everything here reads; nothing writes.

--- @include "common"
--- @include "keys"
--- @include "matching"
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
-- nil when it may claim. Second: its hash's idle_in (false: not idle), read in the same
-- call for the claim's clear_idle.
local function claim_barrier(worker_id, max_leases)
  local f = redis.call('HMGET', K.worker(worker_id), 'state', 'idle_in')
  local state = f[1]
  if state == 'paused' or state == 'draining' then return state, f[2] end
  -- A gateway worker's grant caps the leases it holds. Checked inside the claim itself, so
  -- two claims at once (through two hubs) cannot both pass the cap.
  if (max_leases or 0) > 0 and redis.call('HLEN', K.leases(worker_id)) >= max_leases then
    return 'limit', f[2]
  end
  return nil, f[2]
end

-- Whether `worker_id`, which just failed job `id`, is still to pass it over (the avoidance
-- window after a retry becomes due).
local function avoids(worker_id, id, now)
  local key = K.job(id)
  -- Only a job run before avoids anyone (retry_or_fail writes the avoidance with its
  -- attempt): one read of a field near the hash's start, where reading the two absent
  -- fields would scan the whole hash twice.
  if redis.call('HGET', key, 'attempts') == '0' then return false end
  local a = redis.call('HMGET', key, 'avoid_worker', 'avoid_until')
  return a[1] == worker_id and tonumber(a[2] or '0') > now
end

-- The indexes of classes worth scanning for this worker: a loose-isolation job locks the
-- worker to its customer; a strict worker serves only its allow-list; anyone else scans by
-- service. Returns the index keys and, for each, {svc=, customer=} (customer nil: the
-- service's index, of every customer).
local function scan_indexes(caps, running)
  local customers = nil
  for _, r in ipairs(running) do
    if r.isolation == 'loose' then customers = { r.customer } end
  end
  if not customers and caps.isolation == 'strict' then customers = caps.allowed_list end
  local indexes, owners = {}, {}
  for _, svc in ipairs(caps.services) do
    if customers then
      for _, c in ipairs(customers) do
        indexes[#indexes + 1] = K.service_classes(svc, c)
        owners[#owners + 1] = { svc = svc, customer = c }
      end
    else
      indexes[#indexes + 1] = K.service_classes(svc)
      owners[#owners + 1] = { svc = svc }
    end
  end
  return indexes, owners
end

-- The first job of a class `worker_id` may take (not one it is avoiding), or nil, and
-- whether it is the class's head.
local function pick(worker_id, class_id, now)
  local ids = redis.call('ZRANGE', K.job_class(class_id), '0', '7')
  for i, id in ipairs(ids) do
    if not avoids(worker_id, id, now) then return id, i == 1 end
  end
  return nil
end

-- The verdict memo (K.verdicts): per capability document, whether it can run each class's
-- jobs leases aside ('1') or not ('0'). Decoding a class's document and matching it is most
-- of what a scan costs per class, and most classes a scan passes are ones the worker cannot
-- run (a fleet's big jobs ahead of a small worker): read from the memo, each costs a field
-- of one HMGET per DOCS_PER_READ classes. A class id is a digest of its document and the
-- key one of what the matcher reads of the capabilities (matching.lua matched_part), so a
-- verdict is never stale; the key expires VERDICT_TTL_S after the last claim that added to
-- it (a worker whose services, hardware or models change starts a new one). Leases are
-- never memoised: mismatch judges them afresh for every class read.
local VERDICT_TTL_S = 600
local NO_LEASES = {}

-- Classes are examined in chunks: their verdicts, then the documents of those without a
-- '0', DOCS_PER_READ at a time.
local DOCS_PER_READ = 16

-- The chunk of classes from position `n` of the scan's into `scan`: scan.known[n] the
-- memo's verdict ('1', '0', false: none, or nil: not asked), scan.docs[n] the document
-- (JSON; false where the memo says the worker cannot run it, which is not read). A chunk
-- of one class (the last of an index, or its only one: one class, as a drain of one
-- kind of job has) does not ask the memo: a call to spare one decode at most.
local function read_chunk(scan, n)
  local ids = scan.ids
  local chunk = {}
  for j = n, math.min(#ids, n + DOCS_PER_READ - 1) do chunk[#chunk + 1] = ids[j] end
  local known = {}
  if #chunk > 1 then
    local caps = scan.caps
    if not caps.digest then caps.digest = redis.sha1hex(matched_part(caps.json)) end
    known = redis.call('HMGET', K.verdicts(caps.digest), unpack(chunk))
  end
  local wanted, at = {}, {}
  for k = 1, #chunk do
    scan.known[n + k - 1] = known[k]
    if known[k] == '0' then
      scan.docs[n + k - 1] = false
    else
      wanted[#wanted + 1] = chunk[k]
      at[#at + 1] = n + k - 1
    end
  end
  if #wanted > 0 then
    local read = redis.call('HMGET', K.classes, unpack(wanted))
    for k = 1, #read do scan.docs[at[k]] = read[k] end
  end
end

-- A scan of the classes of `index` (a service or customer index) from position `offset`,
-- at most `budget` of them (scan.ids, in score order), for the worker with `caps`
-- (prepare_caps) and leases `running`. `learn`: whether to add the verdicts it computes to
-- the memo (a claim; a peek writes nothing). The ids are read without their scores: Redis
-- 7.0 formats each score it returns at a cost several times a member's, and a scan needs
-- the scores only from its first match on (score_at: ZSCORE, which the direct workers' ACL
-- grants, one per class that needs it; a few at most).
local function open_scan(index, caps, running, budget, offset, learn)
  return { index = index, ids = redis.call('ZRANGE', index, int(offset), int(offset + budget - 1)),
    caps = caps, running = running, learn = learn, known = {}, docs = {}, scores = {},
    learned = {} }
end

-- The head score of the scan's class at position `n`.
local function score_at(scan, n)
  local scores = scan.scores
  if scores[n] == nil then scores[n] = tonumber(redis.call('ZSCORE', scan.index, scan.ids[n])) end
  return scores[n]
end

-- Class documents decoded, by their text: a claim decodes the document of every class it
-- judges, most often the same few. A class id is a digest of its document, so a text
-- always decodes to the same table; callers never change it. At most DOC_MEMO_MAX texts a
-- generation (common.lua new_memo).
local DOC_MEMO_MAX = 256
local doc_memo = new_memo(DOC_MEMO_MAX)

local function class_doc(json)
  return memoized(doc_memo, json, cjson.decode)
end

-- The scan's class at position `n`: its decoded document when the worker can run its jobs
-- now, else nil (the memo's '0', or mismatch's reason).
local function judge(scan, n)
  local ids = scan.ids
  if scan.docs[n] == nil then read_chunk(scan, n) end
  local json = scan.docs[n]
  if not json then return nil end
  local doc = class_doc(json)
  if mismatch(doc.s, doc.c, doc.r, scan.caps, scan.running) then
    if scan.learn and scan.known[n] == false then
      -- The memo holds the verdict leases aside: with leases held, judge without them.
      local unfit = #scan.running == 0 or mismatch(doc.s, doc.c, doc.r, scan.caps, NO_LEASES)
      local learned = scan.learned
      learned[#learned + 1] = ids[n]
      learned[#learned + 1] = unfit and '0' or '1'
    end
    return nil
  end
  if scan.learn and scan.known[n] == false then
    scan.learned[#scan.learned + 1] = ids[n]
    scan.learned[#scan.learned + 1] = '1'
  end
  return doc
end

-- Store the verdicts `scan` computed (a claim's scans; nothing when all were memoised).
local function remember(scan)
  if #scan.learned == 0 then return end
  local memo = K.verdicts(scan.caps.digest)
  redis.call('HSET', memo, unpack(scan.learned))
  redis.call('EXPIRE', memo, VERDICT_TTL_S)
end

-- The best claimable job `worker_id` can run in strict order (caps: prepare_caps; running:
-- running_of), scanning at most `budget` classes per index from `offset`. Returns {job=,
-- class=, doc=, score=} or nil, and whether some index was cut short by the budget.
-- claim.lua's header states the order and the bounds.
local function find_strict(worker_id, caps, running, budget, offset, now, learn)
  local best = nil
  local truncated = false
  for _, index in ipairs(scan_indexes(caps, running)) do
    local scan = open_scan(index, caps, running, budget, offset, learn)
    local ids = scan.ids
    local settled = false
    for n = 1, #ids do
      local class_id = ids[n]
      if best and score_at(scan, n) >= best.score then settled = true; break end
      local doc = judge(scan, n)
      if doc then
        local id, head = pick(worker_id, class_id, now)
        if id then
          local job_score = tonumber(redis.call('ZSCORE', K.job_class(class_id), id))
          if not best or job_score < best.score then
            best = { job = id, class = class_id, doc = doc, score = job_score }
          end
          -- The class's head: nothing later in this index ranks higher. A job behind a
          -- head this worker avoids may rank below the next classes' heads: go on until
          -- a class's head ranks below it (the check above).
          if head then settled = true; break end
        end
      end
    end
    if not settled and #ids == budget then truncated = true end
    if learn then remember(scan) end
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
-- (Text, as redis.call takes it: common.lua int.)
local OVERDUE_PER_CLAIM = '32'

-- The holds whose bound has run out (held_until <= now; K.held indexes them, claim_next.lua
-- record_decision): job ids, at most OVERDUE_PER_CLAIM. One ZRANGEBYSCORE.
local function overdue_holds(now)
  return redis.call('ZRANGEBYSCORE', K.held, '-inf', int(now), 'LIMIT', '0', OVERDUE_PER_CLAIM)
end

-- Mark the candidates whose class holds one of the `overdue` jobs (overdue_holds):
-- choose.lua's rule 1 takes them first. With `tidy` (a claim; a peek writes nothing)
-- entries of jobs no longer held (claimed by a worker without policies, cancelled,
-- expired) are dropped.
local function mark_overdue(candidates, overdue, tidy)
  if #overdue == 0 then return end
  local by_class = {}
  for _, c in ipairs(candidates) do by_class[c.class] = c end
  for _, id in ipairs(overdue) do
    local f = redis.call('HMGET', K.job(id), 'status', 'class_id', 'held_until')
    if f[1] ~= 'pending' or not f[3] then
      if tidy then redis.call('ZREM', K.held, id) end
    elseif by_class[f[2]] then
      -- The class's head is the held job, or ranks before it: strict order takes it first.
      by_class[f[2]].held_until = tonumber(f[3])
    end
  end
end

-- Whether the policies `sched` could choose other than strict order among candidates whose
-- first is `first` (of customer first.customer), for the worker with `caps` scanning the
-- indexes `owners` describes (scan_indexes), given the `overdue` holds and `extra` (as for
-- gather). When none could, the chooser takes the candidate with the lowest score whatever
-- else the scan finds, so gather keeps only each index's first (see there). Each test is
-- exact for its policy or errs towards "could":
--  * a hold that is overdue somewhere (rule 1);
--  * fit: a smaller idle worker of an offered service (fit_may_hold);
--  * affinity: the worker has a warm model (else no candidate is warm and none is kept);
--  * fair: some class in the scanned indexes, or an extra, of another customer (with one
--    customer, that customer is the lightest and keeps them all).
local function policies_could_differ(sched, caps, owners, overdue, extra, first)
  if #overdue > 0 then return true end
  if sched.on.affinity and #caps.warm_list > 0 then return true end
  if sched.on.fit and fit_may_hold(caps) then return true end
  if sched.on.fair then
    local customer = first.customer
    for _, e in ipairs(extra or {}) do
      if e.doc.c ~= customer then return true end
    end
    for _, o in ipairs(owners) do
      if o.customer then
        if o.customer ~= customer then return true end
      elseif redis.call('ZCARD', K.service_classes(o.svc))
          ~= redis.call('ZCARD', K.service_classes(o.svc, customer)) then
        return true
      end
    end
  end
  return false
end

-- The candidates for the chooser: per matching class one, down each index to sched.window
-- points below the best priority seen, examining at most sched.scan classes (matching or
-- not) once the first candidate is found and at most `budget` per index (as find_strict),
-- plus `extra` ({id=, class=, doc=, score=} the caller judged already: peek's due retries).
-- So policies add at most sched.scan class reads to what strict order reads. Returns them,
-- whether some index was cut short by the budget, and whether the candidates are lean.
-- Lean (unless `full`): where no policy could differ from strict order
-- (policies_could_differ), an index's classes after its first candidate are counted as
-- examined (the window and sched.scan bound the scan exactly as before) but not read: each
-- ranks below that candidate, so strict order would never take it; only if the chosen class
-- offers no job (the worker avoids them) does the caller gather again in full.
local function gather(caps, running, budget, offset, now, sched, extra, full)
  local out, truncated, top = {}, false, nil
  -- Classes left to examine once the scan found a candidate (peek's extra ones do not
  -- count: the claim finds them in their classes).
  local left, found = sched.scan, false
  local overdue = overdue_holds(now)
  local indexes, owners = scan_indexes(caps, running)
  -- Whether the scan is lean: settled when first needed (an index's class after its first
  -- candidate), so a scan that has nothing more to examine asks nothing.
  local lean, leaned = nil, false
  local function add(c)
    out[#out + 1] = c
    if not top or c.priority > top then top = c.priority end
  end
  for _, e in ipairs(extra or {}) do
    add(candidate(e.class, e.doc, e.score, caps, now, sched, e.id))
  end
  local learn = not extra  -- a peek (which passes `extra`, maybe empty) writes nothing
  for _, index in ipairs(indexes) do
    local scan = open_scan(index, caps, running, budget, offset, learn)
    local ids = scan.ids
    local settled, has_first = false, false
    for n = 1, #ids do
      -- Heads are in score order: every later class ranks below the window too.
      if top and (left <= 0 or score_priority(score_at(scan, n)) < top - sched.window) then
        settled = true; break
      end
      if found then left = left - 1 end
      if has_first and lean == nil then
        lean = not full and not policies_could_differ(sched, caps, owners, overdue, extra, out[1])
      end
      if has_first and lean then
        leaned = true
      else
        local doc = judge(scan, n)
        if doc then
          add(candidate(ids[n], doc, score_at(scan, n), caps, now, sched))
          found, has_first = true, true
        end
      end
    end
    if not settled and #ids == budget then truncated = true end
    if learn then remember(scan) end
  end
  mark_overdue(out, overdue, learn)
  return out, truncated, leaned
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
  if not sched then
    return find_strict(worker_id, caps, running, budget, offset, now, not extra)
  end
  local candidates, truncated, lean = gather(caps, running, budget, offset, now, sched, extra)
  local loads = {}
  if sched.on.fair and #candidates > 1 then
    local seen, customers = {}, {}
    for _, c in ipairs(candidates) do
      if not seen[c.customer] then
        seen[c.customer] = true
        customers[#customers + 1] = c.customer
      end
    end
    -- One customer is the lightest whatever its load: its usage need not be read.
    if #customers > 1 then loads = customer_loads(customers, now, sched.half_life_ms) end
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
    if lean then
      -- The worker avoids the chosen class's jobs, and a class the lean scan did not read
      -- may be next: read them all. (No policy could differ, so loads are not needed.)
      lean = false
      candidates, truncated = gather(caps, running, budget, offset, now, sched, extra, true)
      for _, c in ipairs(candidates) do
        if c.class == chosen.class and not c.job then c.job = false end
      end
    end
    local rest = {}
    for _, c in ipairs(candidates) do
      if c ~= chosen and c.job ~= false then rest[#rest + 1] = c end
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
