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
  redis.call('HSET', job_key, 'result', result, 'progress', '100', 'error', '')
  finish(job_key, job_id, 'completed', now)
  redis.call('HDEL', K.leases(worker_id), job_id)
  redis.call('HINCRBY', K.worker(worker_id), 'completed', 1)
  bump_stat(now, 'completed')
  local claimed = tonumber(redis.call('HGET', job_key, 'claimed_at') or now)
  bump_stat(now, 'run_ms', now - claimed)
  emit(job_key, job_id, 'completed', { worker_id = worker_id, run_ms = now - claimed })
  return { 'ok' }
end
