-- match.lua: evaluate the claim's matcher on given documents, changing nothing. Used by the
-- agreement test between this matcher and shared/matching.py.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  service type
-- ARGV[5]  customer id ('' for none)
-- ARGV[6]  requirements JSON
-- ARGV[7]  capabilities JSON
-- ARGV[8]  running jobs JSON: [{"customer": "...", "isolation": "..."}, ...]
-- Returns  '' when the worker matches, else the reason code.
-- Invariants: read-only (writes no key); the decision is exactly the one claim.lua makes,
-- since both call mismatch() in include/matching.lua.

--- @include "matching"

local reason = mismatch(ARGV[4], ARGV[5], cjson.decode(ARGV[6]), prepare_caps(ARGV[7]),
  cjson.decode(ARGV[8]))
return reason or ''
