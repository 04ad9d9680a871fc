-- fit.lua: the `fit` policy's view of the fleet, as the claim's chooser needs it
-- (include/choose.lua, include/find_job.lua). Called only when fit is on. The index it
-- reads, and the doorbell it rings, are include/idle_workers.lua's.

--- @include "idle_workers"

-- The claimant's size, computed once per script call (one claimant per claim) rather than
-- per candidate.
local sized_caps, claimant_size = nil, nil
local function begin_fit()
  sized_caps, claimant_size = nil, nil
end

-- The id of an idle worker smaller than the claiming one that can run class `class_id`
-- (svc: its service; doc: its class document {s=, c=, r=, p=}; caps: prepare_caps of the
-- claiming worker), or nil: the job is then not left to anyone. A job that needs what only
-- the claimant has (its GPU memory, a model, a compliance tag) finds no such worker, so a
-- big worker ends up preferring the jobs only it can run.
local function size_of(caps)
  if caps ~= sized_caps then sized_caps, claimant_size = caps, idle_size(caps) end
  return claimant_size
end

local function fit_blocker(svc, class_id, doc, caps, now)
  return smaller_idle_match(svc, doc, size_of(caps), now)
end

-- Whether fit could leave any job to another worker: some service the claiming worker
-- (caps) offers has an idle worker smaller than it (stale or not). The same reads
-- fit_blocker makes, so asking first costs nothing more.
local function fit_may_hold(caps)
  for _, svc in ipairs(caps.services) do
    if #smaller_idle_ids(svc, size_of(caps)) > 0 then return true end
  end
  return false
end

-- Wake `worker_id` (idle, blocked waiting for work): fit left it a job.
local function wake_worker(worker_id)
  ring_worker(worker_id)
end
