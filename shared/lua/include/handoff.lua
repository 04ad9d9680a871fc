-- handoff.lua: a new job handed straight to an idle worker blocked waiting for work.
--
-- When submit.lua / submit_batch.lua add a job and an idle, live worker of its service that
-- accepts handoffs can run it now, the same call takes the job for that worker under a
-- lease (lease_job.lua, exactly as its claim would) and pushes onto its own doorbell,
-- wake:{worker}, a token that carries the claim: 'h|<token>|<job hash as a JSON array of
-- field, value>' (a name may come twice: the later value is the stored one; lease_job.lua).
-- Broker.wait_for_work returns it as a Claim, so the worker starts the job with no claim
-- round trip.
--
-- Who accepts: only a worker whose last claim said so (claim.lua ARGV[14], complete_claim.lua
-- ARGV[12]); its 'empty' claim records `idle_handoff` in its hash, '1' for a worker claiming
-- in strict order, '2' for one applying scheduling policies. Which worker: the one today's
-- wake-up would ring where the job prefers models (wake_warm's search: the smallest idle
-- worker with them all warm), else the smallest idle worker of the service that can run it
-- (the first of the HANDOFF_LOOK smallest entries of idle:{svc} that matches: all smaller
-- ones were looked at, so it is also the worker the `fit` policy would leave the job to).
-- Cost: O(log n + HANDOFF_LOOK) per submitted job, one ZRANGE when no worker is idle.
-- A single submission (submit.lua) decides before queueing the job (choose_for_new), so a
-- handed job is written with its lease and never enters, then leaves, its class, the class
-- indexes, jobs:pending and jobs:unclaimed: 16 fewer commands than queueing it first, about
-- a fifth of the submission's instructions (bench instructions' W3 case). A batch's jobs
-- are queued first and handed after (hand_off), as rule (b) below then reads.
--
-- Exactness: the job goes to the worker only where its own claim would take it now.
-- An idle worker found nothing to claim at its 'empty' claim; what it could claim now is
-- what became claimable since. The job is handed only when (a) no retry is due (a claim
-- would promote it first, and it may rank ahead), and (b) in every service the worker
-- offers, the best class of classes:{service} does not rank ahead of the job (the job is
-- the head of its class and of every index the worker scans; its per-customer indexes are
-- subsets). With policies on ('2'), a claim may choose another class in its window, so
-- (b) is stricter: the job's class is the only class in those indexes (for a job not yet
-- queued: no class is), and no smaller idle worker could run it (`fit` would leave it to
-- that one). Deciding before queueing keeps (a) and (b) exact: in strict order, a job not
-- yet in its class ranks ahead of every class's head exactly when, queued, it would head
-- them all; with policies on, it is stricter still (its own class, holding older jobs of
-- lower priority, keeps it on the doorbell path, where a claim takes it). Otherwise the
-- job rings a doorbell as before (queue.lua ring_for) and a claim takes it.
--
-- No handed job is lost:
--  * The handoff takes the worker out of the idle index (clear_idle) before pushing its
--    token; only an 'empty' claim of the worker indexes it again, and such a claim (by a
--    worker that accepts handoffs) first takes any handed job still on its doorbell
--    (take_handed: the claim answers with it). So while a handoff token waits, the worker
--    is not idle: no second handoff comes (one slot suffices: at its 'empty' claim it had
--    a free slot, and only this job can take it), no fit or warm wake-up is rung for it
--    (those ring idle workers only), and clear_idle, which drops its doorbell only while
--    it is idle, never drops the token. Wake-up tokens ('0') waiting on the doorbell when
--    the handoff lands are kept behind the handoff token: they were rung for other jobs.
--  * The worker pops the token (BLPOP) or a claim takes it (LREM): each atomic, so exactly
--    one of the two gets it.
--  * The job is leased at the handoff: the reaper requeues it if the worker dies, the
--    heartbeat returns it as orphaned if the worker lives but never starts it (a token lost
--    with a dropped connection), fencing refuses a report under another token; register,
--    deregister and the reaper drop the doorbell, so a restarted worker under the same id
--    never runs a job handed to its previous run.

--- @include "common"
--- @include "keys"
--- @include "matching"
--- @include "leases"
--- @include "idle_workers"
--- @include "lease_job"

-- How many of the smallest idle workers of a service a handoff examines: a constant, so a
-- submission costs O(log n + HANDOFF_LOOK) however many workers idle.
-- (The last index of the HANDOFF_LOOK = 3 smallest, as text: see common.lua int.)
local HANDOFF_LAST = '2'

-- The job handed to `worker_id` that is still waiting on its doorbell, taken off it, as
-- claim.lua's reply {'job', token, fields...}; nil when none is waiting (or it no longer
-- holds it: cancelled meanwhile). The doorbell holds at most WAKE_CAP wake-ups and one
-- handoff (see the header), so this reads a bounded list.
local function take_handed(worker_id)
  local key = K.wake(worker_id)
  for _, t in ipairs(redis.call('LRANGE', key, '0', WAKE_CAP_TEXT)) do
    if string.sub(t, 1, 2) == 'h|' then
      redis.call('LREM', key, 1, t)
      local token = string.match(t, '^h|(%d+)|')
      local flat = redis.call('HGETALL', K.leases(worker_id))
      for i = 1, #flat, 2 do
        local job_key = K.job(flat[i])
        if split(flat[i + 1], '|')[1] == token and holds(job_key, worker_id, token) then
          local reply = { 'job', token }
          local fields = redis.call('HGETALL', job_key)
          for j = 1, #fields do reply[#reply + 1] = fields[j] end
          return reply
        end
      end
      return nil
    end
  end
  return nil
end

-- The idle worker a job of `svc` would be handed to ({id=, w=idle_worker's entry, warm=}),
-- or nil; see the header for the choice. `smallest`: the ids of the HANDOFF_LOOK smallest
-- idle workers of `svc` where the caller read them (nil: read here).
local function handoff_target(now, svc, customer, req, models, smallest)
  if #models > 0 then
    -- The worker wake_warm would ring: it or nobody warm.
    local id, w = warm_idle_worker(svc, customer, req, models, now)
    if id then return { id = id, w = w, warm = true } end
  end
  for _, id in ipairs(smallest or redis.call('ZRANGE', K.idle_workers(svc), '0', HANDOFF_LAST)) do
    local w = idle_worker(id, now)
    if w and not mismatch(svc, customer, req, w.caps, w.running) then
      return { id = id, w = w, warm = false }
    end
  end
  return nil
end

-- Would the claim of idle worker `t` (handoff_target's) take the job with `score`, in
-- class `class_id` (document `doc`), now? Rules (a) and (b) of the header. `queued`: the
-- job is in its class and the class indexes already (a batch's job); else it is in none
-- of them (a single submission decides before queueing it), and then any class in those
-- indexes is another job's: with policies on, one is too many.
local function handoff_exact(t, mode, score, class_id, doc, now, queued)
  if #redis.call('ZRANGEBYSCORE', K.delayed, '-inf', int(now), 'LIMIT', '0', '1') > 0 then
    return false
  end
  local strict = mode == '1'
  for _, s in ipairs(t.w.caps.services) do
    local head = redis.call('ZRANGE', K.service_classes(s), '0', strict and '0' or '1',
      'WITHSCORES')
    if head[1] and tonumber(head[2]) < score then return false end
    if not strict and (head[3] or (head[1] and (not queued or head[1] ~= class_id))) then
      return false
    end
  end
  if not strict and t.warm and smaller_idle_match(doc.s, doc, idle_size(t.w.caps), now) then
    return false
  end
  return true
end

-- The idle worker a new job of `svc` (customer `customer`, requirements `req_json`,
-- preferred models `preferred`: ring_for's arguments; `score` and `class_id` its own) goes
-- to where the header's rules allow, as {id=, w=, warm=, doc=}; nil: none. `queued`: see
-- handoff_exact. The caller checks first that some worker of `svc` idles; `smallest`: as
-- for handoff_target.
local function handoff_choice(now, svc, customer, req_json, preferred, score, class_id, queued,
    smallest)
  local req = cjson.decode(req_json)
  local models = (preferred and preferred ~= '') and cjson.decode(preferred) or {}
  local t = handoff_target(now, svc, customer, req, models, smallest)
  if not t then return nil end
  local mode = t.w.handoff
  if not mode then return nil end
  t.doc = { s = svc, c = customer, r = req }
  if not handoff_exact(t, mode, score, class_id, t.doc, now, queued) then return nil end
  return t
end

-- Lease job `job_id` (class `class_id`) to the worker handoff_choice chose, `t`, and push
-- the claim onto its doorbell. A job never queued comes with `t.new_job` (submit_job.lua
-- sets it: lease_job.lua's `new_job`), whose fields the token then carries without reading
-- the hash back; a queued one (a batch's) has none.
local function hand_over(t, job_id, class_id, now)
  local key = K.wake(t.id)
  local waiting = math.min(redis.call('LLEN', key), WAKE_CAP)
  -- What idle_worker read of its hash in this call. Only a warm wake-up earlier in the same
  -- batch can have changed it since (it clears idle_warm): clearing that again is a no-op.
  clear_idle(t.id, t.w.idle_in, t.w.idle_warm)
  local token, flat = lease_job(t.id, job_id, class_id, t.doc, now, { handoff = 1 }, nil,
    t.new_job)
  local tokens = {}
  for i = 1, waiting do tokens[i] = '0' end
  tokens[#tokens + 1] = 'h|' .. token .. '|' .. cjson.encode(flat)
  redis.call('LPUSH', key, unpack(tokens))
  return t.id
end

-- Hand the queued job `job_id` just made claimable (a batch's: submit_batch.lua) to an
-- idle worker where the header's rules allow. Returns the worker's id, or nil: the caller
-- rings a doorbell as before. The caller checks first that some worker of `svc` idles.
local function hand_off(now, job_id, svc, customer, req_json, preferred)
  local f = redis.call('HMGET', K.job(job_id), 'score', 'class_id')
  local t = handoff_choice(now, svc, customer, req_json, preferred, tonumber(f[1]), f[2], true)
  if not t then return nil end
  return hand_over(t, job_id, f[2], now)
end

-- For submit_job (its `chooser`): the idle worker a single submission's new job goes to,
-- decided before it is queued, so that a handed job never enters, and leaves, the pending
-- structures; nil when no worker of `svc` idles or none may take it now.
local function choose_for_new(now, svc, customer, req_json, preferred, score, class_id)
  -- The smallest idle workers, read once: none is the common case of a busy fleet, and
  -- reading them is no dearer than asking whether there are any.
  local smallest = redis.call('ZRANGE', K.idle_workers(svc), '0', HANDOFF_LAST)
  if #smallest == 0 then return nil end
  return handoff_choice(now, svc, customer or '', req_json, preferred, score, class_id, false,
    smallest)
end
