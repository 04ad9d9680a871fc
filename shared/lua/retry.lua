-- retry.lua: an operator sends a failed job (dead letter) back to the queue.
--
-- KEYS[1]  jobs:pending
-- ARGV[1..3] common (include/common.lua)
-- ARGV[4]  job id
-- Returns  {'ok'}, {'not_failed', status} or {'missing'}.
-- Invariants: attempts restart at 0; the job keeps its original score; its retention TTL
-- is removed while it is live again; the job rings a doorbell as a new one does
-- (submit.lua).

--- @include "common"
--- @include "keys"
--- @include "events"
--- @include "queue"

local job_id = ARGV[4]
local job_key = K.job(job_id)
local status = redis.call('HGET', job_key, 'status')
if not status then return { 'missing' } end
if status ~= 'failed' then return { 'not_failed', status } end
local now = now_ms()
redis.call('PERSIST', job_key)
redis.call('ZREM', K.finished('failed'), job_id)
redis.call('HSET', job_key, 'status', 'pending', 'attempts', 0, 'progress', '0', 'message', '')
redis.call('HDEL', job_key, 'finished_at', 'avoid_worker', 'avoid_until', 'token')
redis.call('ZADD', K.pending, redis.call('HGET', job_key, 'score'), job_id)
ring_for(now, enqueue_claimable(job_key, job_id))
bump_stat(now, 'retried')
emit(job_key, job_id, 'retrying', { operator = true })
return { 'ok' }
