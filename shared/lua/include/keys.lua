-- keys.lua: every key and channel name the scripts use, built in this one place.
--
-- The same names, built the same way, as shared/keys.py (its docstring says what each key
-- holds); tests/integration/test_lua_keys.py checks the two agree name for name. Scripts and
-- the other includes never join the prefix to a name themselves, so a change of key layout
-- (such as a per-pool hash tag for Redis Cluster) is made here and in keys.py only.

--- @include "common"

-- The builders are made once; the plain names depend on the call's prefix, so begin_keys
-- sets them, and only when the prefix differs from the last call's (a process uses one
-- prefix per pool, so most calls rebuild nothing).
local K = {
  job = function(job_id) return P .. 'job:' .. job_id end,
  leases = function(worker_id) return P .. 'jobs:active:' .. worker_id end,
  -- Registry of finished jobs: completed, failed (the dead letter) or cancelled.
  finished = function(status) return P .. 'jobs:' .. status end,
  job_class = function(class_id) return P .. 'class:' .. class_id end,
  service_classes = function(svc, customer)
    if customer == nil then return P .. 'classes:' .. svc end
    return P .. 'classes:' .. svc .. ':' .. customer
  end,
  worker = function(worker_id) return P .. 'worker:' .. worker_id end,
  notify = function(svc) return P .. 'notify:' .. svc end,
  idle_workers = function(svc) return P .. 'idle:' .. svc end,
  wake = function(worker_id) return P .. 'wake:' .. worker_id end,
  warm_idle = function(svc, model) return P .. 'warm:' .. svc .. ':' .. model end,
  verdicts = function(caps_digest) return P .. 'classes.verdicts:' .. caps_digest end,
  idempotency = function(digest) return P .. 'idem:' .. digest end,
  stats = function(minute) return P .. 'stats:' .. minute end,
  control = function(worker_id) return P .. 'control:' .. worker_id end,
  rate_limit = function(bucket) return P .. 'ratelimit:' .. bucket end,
  webhook = function(delivery_id) return P .. 'webhook:' .. delivery_id end,
}

local K_PREFIX = nil
local function begin_keys()
  if P == K_PREFIX then return end
  K_PREFIX = P
  K.pending = P .. 'jobs:pending'
  K.seq = P .. 'jobs:seq'
  K.tokens = P .. 'jobs:tokens'
  K.delayed = P .. 'jobs:delayed'
  K.active = P .. 'jobs:active'
  K.unclaimed = P .. 'jobs:unclaimed'
  K.fleet = P .. 'fleet'
  K.fair_usage = P .. 'fair:usage'
  K.fair_weights = P .. 'fair:weights'
  K.held = P .. 'sched:held'
  K.classes = P .. 'classes'
  K.workers = P .. 'workers'
  K.events = P .. 'events'
  K.webhooks_due = P .. 'webhooks:due'
  K.webhooks_failed = P .. 'webhooks:failed'
end
