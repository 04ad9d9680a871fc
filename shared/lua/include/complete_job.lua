-- complete_job.lua: store the result of a job the worker holds (complete.lua,
-- complete_claim.lua).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "leases"
--- @include "transitions"

-- Returns {'ok'}, or {'stale'} / {'cancelled'} when the fence refuses it.
local function complete_job(worker_id, job_id, token, result)
  local job_key, why = fenced(worker_id, job_id, token)
  if not job_key then return { why } end
  local now = now_ms()
  -- One read of what the completion needs besides the fence (the hottest path after the
  -- claim: every redis.call costs it a few microseconds), and one write of the hash.
  local f = redis.call('HMGET', job_key, 'claimed_at', 'customer_id', 'event_seq',
    'fair_charge')
  local claimed = tonumber(f[1]) or now
  local customer = f[2] or ''
  local seq = (tonumber(f[3]) or 0) + 1
  finish(job_key, job_id, 'completed', now,
    { 'result', result, 'progress', '100', 'error', '', 'event_seq', seq },
    { charge = f[4], claimed_at = f[1], customer = customer })
  redis.call('HDEL', K.leases(worker_id), job_id)
  redis.call('HINCRBY', K.worker(worker_id), 'completed', 1)
  bump_stat(now, 'completed')
  bump_stat(now, 'run_ms', now - claimed)
  emit(job_key, job_id, 'completed', { worker_id = worker_id, run_ms = now - claimed }, seq,
    customer)
  return { 'ok' }
end
