-- complete_job.lua: store the result of a job the worker holds (complete.lua,
-- complete_claim.lua).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "leases"
--- @include "transitions"

local COMPLETION_READS = { 'claimed_at', 'customer_id', 'event_seq', 'fair_charge' }

-- Returns {'ok'}, or {'stale'} / {'cancelled'} when the fence refuses it.
local function complete_job(worker_id, job_id, token, result)
  -- What the completion needs is read with the fence, in one call (the hottest path after
  -- the claim: every redis.call costs it a few microseconds), and written in one HSET.
  local job_key, why, f = fenced(worker_id, job_id, token, COMPLETION_READS)
  if not job_key then return { why } end
  local now = now_ms()
  local claimed = tonumber(f[4]) or now
  local customer = f[5] or ''
  local seq = (tonumber(f[6]) or 0) + 1
  -- A leased job has no backoff (its lease cleared it, lease_job.lua), and a fair-share
  -- mark only where it was read: an absent field costs HDEL a scan of the whole hash.
  finish(job_key, job_id, 'completed', now,
    { 'result', result, 'progress', '100', 'error', '', 'event_seq', int(seq) },
    { charge = f[7], claimed_at = f[4], customer = customer },
    f[7] and { 'token', 'fair_charge' } or { 'token' })
  redis.call('HDEL', K.leases(worker_id), job_id)
  redis.call('HINCRBY', K.worker(worker_id), 'completed', '1')
  bump_stat(now, 'completed')
  bump_stat(now, 'run_ms', now - claimed)
  emit(job_key, job_id, 'completed', { worker_id = worker_id, run_ms = now - claimed }, seq,
    customer)
  return { 'ok' }
end
