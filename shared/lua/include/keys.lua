-- keys.lua: every key and channel name the scripts use, built in this one place.
--
-- The same names, built the same way, as shared/keys.py (its docstring says what each key
-- holds); tests/integration/test_lua_keys.py checks the two agree name for name. Scripts and
-- the other includes never join the prefix to a name themselves, so a change of key layout
-- (such as a per-pool hash tag for Redis Cluster) is made here and in keys.py only.

--- @include "common"

local K = {
  pending = P .. 'jobs:pending',
  seq = P .. 'jobs:seq',
  tokens = P .. 'jobs:tokens',
  delayed = P .. 'jobs:delayed',
  active = P .. 'jobs:active',
  classes = P .. 'classes',
  workers = P .. 'workers',
  events = P .. 'events',
}

function K.job(job_id) return P .. 'job:' .. job_id end
function K.leases(worker_id) return P .. 'jobs:active:' .. worker_id end
-- Registry of finished jobs: completed, failed (the dead letter) or cancelled.
function K.finished(status) return P .. 'jobs:' .. status end
function K.job_class(class_id) return P .. 'class:' .. class_id end
function K.service_classes(svc, customer)
  if customer == nil then return P .. 'classes:' .. svc end
  return P .. 'classes:' .. svc .. ':' .. customer
end
function K.worker(worker_id) return P .. 'worker:' .. worker_id end
function K.notify(svc) return P .. 'notify:' .. svc end
function K.idempotency(digest) return P .. 'idem:' .. digest end
function K.stats(minute) return P .. 'stats:' .. minute end
function K.control(worker_id) return P .. 'control:' .. worker_id end
