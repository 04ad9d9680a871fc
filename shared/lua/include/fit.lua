-- fit.lua: the `fit` policy's view of the fleet, as the claim's chooser needs it
-- (include/choose.lua, include/find_job.lua). Called only when fit is on. (Stubs until
-- the idle-worker index lands: nothing is left to another worker, nobody is woken.)

-- The id of an idle worker smaller than the claiming one that can run class `class_id`
-- (svc: its service; doc: its class document {s=, c=, r=, p=}; caps: prepare_caps of the
-- claiming worker), or nil: the job is then not left to anyone.
local function fit_blocker(svc, class_id, doc, caps, now)
  return nil
end

-- Wake `worker_id` (idle, blocked waiting for work): fit left it a job.
local function wake_worker(worker_id)
end
