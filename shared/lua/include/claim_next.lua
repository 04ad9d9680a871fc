-- claim_next.lua: the claim (claim.lua, complete_claim.lua).

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "queue"
--- @include "find_job"
--- @include "choose"
--- @include "fit"
--- @include "idle_workers"
--- @include "lease_job"
--- @include "handoff"

-- Mark job `job_id` passed over now by bounded `policy`: held since its first such pass-over
-- (now, if this is it), until that plus `bound` ms or an earlier deadline it has already,
-- indexed in K.held so that find_job.lua mark_overdue finds it once that passed. Returns
-- the deadline.
local function hold(job_id, policy, bound, now)
  local key = K.job(job_id)
  local f = redis.call('HMGET', key, 'held_since', 'held_until')
  local since = tonumber(f[1] or '') or now
  local deadline = since + bound
  local before = tonumber(f[2] or '')
  if before and before < deadline then deadline = before end
  redis.call('HSET', key, 'held_by', policy, 'held_at', int(now), 'held_since', int(since),
    'held_until', int(deadline))
  redis.call('ZADD', K.held, deadline, job_id)
  return deadline
end

-- The scheduling bookkeeping of a claim that took `chosen` (policies on; nil: fit left
-- every candidate to smaller idle workers), O(1) per claim: the strict-order best, if a
-- policy passed it over, records that policy and, for a bounded one, the deadline by which
-- it must be taken: its first bounded pass-over (when strict order would have given it
-- out) plus the bound, the earlier one when several policies held it; choose.lua's rule 1
-- forces it from then on. Only that one job is marked; the next becomes the strict-order
-- best once it is taken, and its own bound counts from its first pass-over as such (as in
-- delay scheduling). Idle workers that fit left jobs to are woken. Returns the deadline
-- set (nil: none).
local function record_decision(chosen, decision, sched, now)
  local strict = decision.strict
  local policy = decision.held[strict]
  local deadline = nil
  if strict ~= chosen and policy and strict.job then
    local bound = sched.bound_ms[policy]
    if bound then
      deadline = hold(strict.job, policy, bound, now)
    else
      redis.call('HSET', K.job(strict.job), 'held_by', policy, 'held_at', int(now))
    end
  end
  local woken = {}
  for _, c in ipairs(decision.candidates) do
    if decision.held[c] == 'fit' and c.fit_blocker and not woken[c.fit_blocker] then
      woken[c.fit_blocker] = true
      wake_worker(c.fit_blocker)
    end
  end
  return deadline
end

-- The GPUs a job of class document `doc` holds (its GPU requirement's count, else 1), for
-- fair share's usage.
local function gpus_of(doc)
  local hw = val(doc.r.hardware)
  local gpu = hw and val(hw.gpu)
  return (gpu and val(gpu.count)) or 1
end

-- Parsed scheduling policies, by their text: a worker claims with the same text every
-- time, and parsing it (a string.match, a string.gmatch and a table per policy) was the
-- dearest part of an empty claim after its Redis calls. Callers never change the parsed
-- table. A fleet has few texts; two generations of 16 keep them (common.lua new_memo).
local sched_memo = new_memo(16)

-- Take the best pending job `worker_id` can run, under a lease. Returns {'job', token,
-- field1, value1, ...} or {'none', reason, next_due_ms, next_offset[, priority,
-- created_at]}; claim.lua's header states the contract and the invariants. `elsewhere`,
-- `floor_priority` and `floor_created` are claim.lua's ARGV[10..12] (nil: none);
-- `scheduling` its ARGV[13] (choose.lua parse_scheduling; nil or '': strict order);
-- `handoff` true where the worker accepts jobs handed to it while idle (handoff.lua): a
-- job handed to it and not yet popped from its doorbell is then this claim's answer.
local function claim_next(worker_id, caps_json, budget, offset, hops, max_leases, elsewhere,
    floor_priority, floor_created, scheduling, handoff)
  if handoff then
    local handed = take_handed(worker_id)
    if handed then return handed end
  end
  local barrier, idle_in = claim_barrier(worker_id, max_leases)
  if barrier then
    -- Paused, draining or at its lease cap: it could not take a job left for it.
    clear_idle(worker_id, idle_in)
    return { 'none', barrier, '', '' }
  end

  local now = now_ms()
  promote_due(now, DUE_PER_CLAIM)
  local caps = prepare_caps(caps_json)
  local lease_key = K.leases(worker_id)
  local running = running_of(lease_key, elsewhere)
  local sched = (scheduling and scheduling ~= '') and memoized(sched_memo, scheduling,
    parse_scheduling) or nil
  local best, truncated, decision = find_best(worker_id, caps, running, budget, offset, now,
    sched)

  if not best then
    -- With a decision but no job, fit left every candidate to smaller idle workers and woke
    -- them: this worker answers 'empty' and waits until the held job's deadline at most.
    local held_until = decision and record_decision(nil, decision, sched, now)
    if hops > 0 and not decision then
      -- Woken for work this worker cannot do: pass the wake-up on to another idle worker.
      for _, svc in ipairs(caps.services) do
        if redis.call('ZCARD', K.service_classes(svc)) > 0 then notify(svc, hops - 1) end
      end
    end
    local due = redis.call('ZRANGE', K.delayed, '0', '0', 'WITHSCORES')
    local next_due = due[2]
    if held_until and (not next_due or held_until < tonumber(next_due)) then
      next_due = int(held_until)
    end
    if truncated then return { 'none', 'more', next_due or '', int(offset + budget) } end
    mark_idle(worker_id, caps, caps_json, now, sched ~= nil and sched.on.affinity == true,
      handoff and (sched and '2' or '1'))
    return { 'none', 'empty', next_due or '', '' }
  end

  local best_job, best_class, best_doc = best.job, best.class, best.doc
  if floor_priority then
    -- A worker serving several pools takes this pool's best only if it ranks at least as
    -- high as the best job it saw in its other pools (worker/pooled_broker.py); otherwise
    -- it learns this pool's best instead, to choose again.
    local priority, created = rank_of(best_job)
    if priority < floor_priority or (priority == floor_priority and created > floor_created) then
      local due = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
      return { 'none', 'worse', due[2] or '', '', int(priority), int(created) }
    end
  end

  -- idle_in as the claim began: nothing since changes it (a wake-up, a fit decision, a due
  -- retry's doorbell write no idle_in; only a submission hands a job off, handoff.lua).
  clear_idle(worker_id, idle_in)
  local fair_charge = nil
  if decision then
    record_decision(best, decision, sched, now)
    if sched.on.fair then fair_charge = gpus_of(best_doc) .. '|' .. int(sched.half_life_ms) end
  end
  return claim_reply(lease_job(worker_id, best_job, best_class, best_doc, now, {}, fair_charge))
end
