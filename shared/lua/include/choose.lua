-- choose.lua: the scheduling rule, which of the matching jobs a claim takes. The same rule
-- as shared/scheduling/chooser.py (the specification, whose docstring states it);
-- tests/integration/test_choose_agreement.py holds the two equal. Pure: reads no key, so
-- choose_eval.lua can evaluate it on given candidates.
--
-- A candidate is {score=, priority=, customer=, warm=, fit_blocker=, held_until=}
-- (find_job.lua adds class=, doc= and, once settled, job= for the claim; choose_eval.lua
-- job=). warm: it has at least one model and every one is in the worker's warm_models;
-- fit_blocker: an idle smaller worker that can run it, or nil; held_until: the deadline a
-- bounded policy set when it passed it over, ms.


-- The scheduling ARGV (shared/scheduling/policies.py claim_argument):
-- 'policies|window|affinity_ms|fit_ms|half_life_ms|scan', or ''/nil for strict order (nil).
-- scan: the most classes a claim examines beyond strict order's (find_job.lua gather).
-- One string.match rather than split: every claim parses it, and this is about half the cost.
local function parse_scheduling(arg)
  if not arg or arg == '' then return nil end
  local names, window, affinity_ms, fit_ms, half_life_ms, scan = string.match(arg,
    '^([^|]*)|?([^|]*)|?([^|]*)|?([^|]*)|?([^|]*)|?([^|]*)')
  local on = {}
  for name in string.gmatch(names, '[^,]+') do on[name] = true end
  return {
    on = on,
    window = tonumber(window) or 0,
    bound_ms = { affinity = tonumber(affinity_ms) or 0, fit = tonumber(fit_ms) or 0 },
    half_life_ms = tonumber(half_life_ms) or 0,
    scan = tonumber(scan) or 16,
  }
end

-- The candidate strict order takes: the lowest score (the first of equals).
local function strict_best(list)
  local best = list[1]
  for i = 2, #list do
    if list[i].score < best.score then best = list[i] end
  end
  return best
end

-- The candidates of the customer with the lowest load; on a tie, of the customer whose
-- best candidate ranks first.
local function lightest_customer(pool, loads)
  local first = pool[1]
  for i = 2, #pool do
    local c = pool[i]
    local load, first_load = loads[c.customer] or 0, loads[first.customer] or 0
    if load < first_load or (load == first_load and c.score < first.score) then first = c end
  end
  local out = {}
  for _, c in ipairs(pool) do
    if c.customer == first.customer then out[#out + 1] = c end
  end
  return out
end

-- The rule: returns the chosen candidate, a table candidate -> the policy that passed it
-- over, and whether a bound forced the choice; nil with no candidate. The chosen candidate
-- is nil (and every candidate held by fit) when fit leaves them all to smaller idle
-- workers. `loads`: customer -> usage / weight (fair share).
local function choose(candidates, sched, now, loads)
  if #candidates == 0 then return nil end
  local top = strict_best(candidates)
  local band, overdue = {}, {}
  for _, c in ipairs(candidates) do
    if c.priority >= top.priority - sched.window then
      band[#band + 1] = c
      if c.held_until and now >= c.held_until then overdue[#overdue + 1] = c end
    end
  end
  if #overdue > 0 then return strict_best(overdue), {}, true end

  local held, pool = {}, band
  local function keep(policy, kept)
    if #kept == 0 or #kept == #pool then return end
    local kept_set = {}
    for _, c in ipairs(kept) do kept_set[c] = true end
    for _, c in ipairs(pool) do
      if not kept_set[c] then held[c] = policy end
    end
    pool = kept
  end
  local function where(test)
    local out = {}
    for _, c in ipairs(pool) do
      if test(c) then out[#out + 1] = c end
    end
    return out
  end

  if sched.on.fit then
    local fitting = where(function(c) return not c.fit_blocker end)
    if #fitting == 0 then
      for _, c in ipairs(pool) do held[c] = 'fit' end
      return nil, held, false
    end
    keep('fit', fitting)
  end
  if sched.on.affinity then keep('affinity', where(function(c) return c.warm end)) end
  if sched.on.fair then keep('fair', lightest_customer(pool, loads)) end
  return strict_best(pool), held, false
end
