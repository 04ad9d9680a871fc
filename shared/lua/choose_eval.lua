-- choose_eval.lua: evaluate the claim's scheduling rule on given candidates, changing
-- nothing. Used by the agreement test between include/choose.lua and
-- shared/scheduling/chooser.py.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  candidates JSON: [{"job", "score", "priority", "customer", "warm",
--          "fit_blocker", "held_until"}, ...] (absent or null fields: none)
-- ARGV[5]  scheduling policies, as claim.lua's ARGV[13]
-- ARGV[6]  now, ms
-- ARGV[7]  loads JSON: {"customer": usage / weight, ...}
-- Returns  {chosen job id, held JSON {"job": "policy", ...}, overdue 1/0}, or {} with no
--          candidate; the chosen job id is '' when fit left every candidate to others.
-- Invariants: read-only (writes no key); the decision is exactly the one claim.lua makes
-- on the same candidates, since both call choose() in include/choose.lua.

--- @include "common"
--- @include "choose"

local candidates = {}
for _, c in ipairs(cjson.decode(ARGV[4])) do
  candidates[#candidates + 1] = { job = c.job, score = tonumber(c.score),
    priority = tonumber(c.priority), customer = c.customer, warm = c.warm == true,
    fit_blocker = val(c.fit_blocker), held_until = val(c.held_until) }
end
local sched = parse_scheduling(ARGV[5]) or parse_scheduling('|0|0|0|0')
local chosen, held, overdue = choose(candidates, sched, tonumber(ARGV[6]), cjson.decode(ARGV[7]))
if not held then return {} end
local held_json = '{}'
if next(held) then
  local by_job = {}
  for c, policy in pairs(held) do by_job[c.job] = policy end
  held_json = cjson.encode(by_job)
end
return { chosen and chosen.job or '', held_json, overdue and 1 or 0 }
