-- leases.lua: who holds an active job, and the fence every worker report passes.
--
-- A claim writes a lease into jobs:active:{worker} (job id -> "token|customer|isolation|
-- claimed_ms") and the same worker id and token into the job hash; a worker's report counts
-- only while both still name it.

--- @include "keys"

-- Does `worker_id` hold the job under `token` (status active, same owner, same token)?
-- Also returns the job's status, and the values of the fields `also` names (nil: none) read
-- in the same call, at f[4] on.
local function holds(job_key, worker_id, token, also)
  local f = also and redis.call('HMGET', job_key, 'status', 'worker_id', 'token', unpack(also))
    or redis.call('HMGET', job_key, 'status', 'worker_id', 'token')
  return f[1] == 'active' and f[2] == worker_id and f[3] == token, f[1], f
end

-- Fencing: the lease record the worker must still hold. Returns the job key, or nil and
-- the reason ('stale' or the job's terminal status, e.g. 'cancelled'); with `also`, the job
-- key is followed by the values of those fields, as holds() reads them (from [4] on).
local function fenced(worker_id, job_id, token, also)
  local job_key = K.job(job_id)
  local lease = redis.call('HGET', K.leases(worker_id), job_id)
  if not lease then return nil, 'stale' end
  -- The lease's token: the text before its first '|' (as split(lease, '|')[1], without a
  -- table and four strings for one comparison).
  local bar = string.find(lease, '|', 1, true)
  if (bar and string.sub(lease, 1, bar - 1) or lease) ~= token then return nil, 'stale' end
  local held, status, f = holds(job_key, worker_id, token, also)
  if held then return job_key, nil, f end
  -- The worker still holds a lease on a job that was cancelled: drop the lease now that
  -- the worker has reported back.
  redis.call('HDEL', K.leases(worker_id), job_id)
  if status == 'cancelled' then return nil, 'cancelled' end
  return nil, 'stale'
end
