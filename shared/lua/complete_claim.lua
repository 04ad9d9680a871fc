-- complete_claim.lua: complete a job the worker holds and claim its next one, in one call.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  worker id
-- ARGV[5]  job id
-- ARGV[6]  claim token
-- ARGV[7]  result JSON
-- ARGV[8]  the worker's capabilities (JSON), as for claim.lua
-- ARGV[9]  scan budget, as for claim.lua
-- ARGV[10] most leases the worker may hold after the completion, as for claim.lua
-- ARGV[11] scheduling policies, as claim.lua's ARGV[13] ('' or absent: strict order)
-- ARGV[12] '1' where the worker accepts handoffs, as claim.lua's ARGV[14] ('' or absent: not)
-- Returns  {fence, claim reply...}: fence is complete.lua's 'ok', 'stale' or 'cancelled';
--          then claim.lua's reply ({'job', token, fields...} or {'none', reason, due, next}).
-- Invariants: exactly those of complete.lua followed by claim.lua (offset 0, no wake-up
-- hops): the claim is tried whatever the fence said, since the slot is free either way. It
-- saves a worker one round trip per job; a worker that is stopping or paused uses
-- complete.lua instead.

--- @include "complete_job"
--- @include "claim_next"

local fence = complete_job(ARGV[4], ARGV[5], ARGV[6], ARGV[7])
local reply = claim_next(ARGV[4], ARGV[8], tonumber(ARGV[9]), 0, 0, tonumber(ARGV[10]), nil,
  nil, nil, ARGV[11], ARGV[12] == '1')
table.insert(reply, 1, fence[1])
return reply
