-- complete_claim.lua: complete jobs the worker holds and claim its next ones, in one call.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  the worker's capabilities (JSON), as for claim.lua
-- ARGV[6]  scan budget, as for claim.lua
-- ARGV[7]  most leases the worker may hold after a completion, as for claim.lua
-- ARGV[8]  scheduling policies, as claim.lua's ARGV[13] ('' : strict order)
-- ARGV[9]  '1' where the worker accepts handoffs, as claim.lua's ARGV[14] ('': not)
-- ARGV[10..] one triple per completion, in order: job id, claim token, result JSON
-- Returns  one reply per triple, in order: {fence, claim reply...}; fence is complete.lua's
--          'ok', 'stale' or 'cancelled', then claim.lua's reply ({'job', token, fields...}
--          or {'none', reason, due, next}).
-- Invariants: exactly those of complete.lua followed by claim.lua (offset 0, no wake-up
-- hops), once per triple and in their order, as if each pair were its own call: the claim
-- is tried whatever the fence said, since the slot is free either way. Once a claim answers
-- 'empty', later triples are completed and answered the same without claiming again: a
-- completion makes no job claimable (other answers, such as 'busy' at the lease cap, may
-- change with a completion, so those claims are made). It saves a worker
-- one round trip per job, and a worker whose slots finish together one call for them all
-- (shared/completion_group.py); a worker that is stopping or paused uses complete.lua.

--- @include "complete_job"
--- @include "claim_next"

local worker_id, caps, budget, max_leases = ARGV[4], ARGV[5], tonumber(ARGV[6]),
  tonumber(ARGV[7])
local scheduling, handoff = ARGV[8], ARGV[9] == '1'
local replies, empty = {}, nil
for i = 10, #ARGV, 3 do
  local fence = complete_job(worker_id, ARGV[i], ARGV[i + 1], ARGV[i + 2])
  local reply = empty or claim_next(worker_id, caps, budget, 0, 0, max_leases, nil, nil, nil,
    scheduling, handoff)
  if reply[2] == 'empty' then empty = reply end
  -- One table constructor (unpack): copying the claim's fields one by one in Lua cost a
  -- claim about 1% of its cycles.
  replies[#replies + 1] = { fence[1], unpack(reply) }
end
return replies
