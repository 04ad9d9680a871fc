"""Settings that define fleet behaviour have one source, tested with a hub and a worker that
disagree (security issue item 10).

With RESULT_RETENTION_SECONDS=120 on the hub, completed jobs still got a 24 h TTL: the TTL
was set by whichever worker completed the job, from that worker's environment; retry
backoff and the avoid window likewise. The hubs now publish that job policy to Redis and
every script follows it. A worker's lease timeout is the other way round: it is the
worker's own (its heartbeat interval must fit in it), also when it reaches the broker
through a hub's gateway, which used to impose the hub's.
"""

from __future__ import annotations

from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.hub_support import (
    CLIENT,
    OPERATOR,
    capabilities,
    hub_client,
    hub_settings,
    running_hub,
)
from worker.gateway_client import GatewayClient

HUB = BrokerSettings(
    retention=120, retry_backoff_base=200, retry_backoff_cap=400, avoid_window=1000
)
WORKER = BrokerSettings()  # every default: 24 h retention, 1 s backoff, 10 s avoid window


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_the_hubs_job_policy_applies_whichever_worker_runs_the_job(
    redis_url: str, redis: Redis
) -> None:
    """A hub with 120 s retention, 200 s retry backoff and a 1000 s avoid window; a worker
    left at the defaults completes one job and fails another: both follow the hub."""
    worker = Broker(redis, WORKER)
    caps = capabilities()
    await worker.register_worker("w-defaults", caps)
    async with hub_client(hub_settings(redis_url, HUB)) as api:
        ids = []
        for _ in range(2):
            response = await api.post("/jobs", json={"service_type": "comfyui"}, headers=CLIENT)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        done = await worker.claim("w-defaults", caps)
        assert isinstance(done, Claim)
        assert await worker.complete("w-defaults", done.job.id, done.token, {"ok": 1}) == "ok"
        ttl = await redis.ttl(worker.keys.job(done.job.id))
        assert 0 < ttl <= 120, ttl  # was 86,400: the worker's own retention

        failing = await worker.claim("w-defaults", caps)
        assert isinstance(failing, Claim)
        before = await redis_ms(redis)
        outcome = await worker.fail("w-defaults", failing.job.id, failing.token, "boom")
        assert outcome == "retrying"
        job = await worker.get(failing.job.id)
        assert job is not None
        assert job.status == JobStatus.PENDING
        assert job.retry_at is not None
        delay = job.retry_at - before
        assert delay >= 100_000, delay  # the hub's 200 s base, jittered to [0.5, 1)
        avoid_until = int(await redis.hget(worker.keys.job(job.id), "avoid_until") or 0)
        assert avoid_until - job.retry_at >= 1_000_000 - 1  # the hub's avoid window


async def test_a_gateway_worker_keeps_its_own_lease_timeout(redis_url: str, redis: Redis) -> None:
    """A hub with a 5 s lease timeout, a gateway worker whose own is 40 s (with a heartbeat
    interval to match): registering and heartbeating through the hub renew the worker's
    40 s, where the hub's 5 s would have presumed it dead between two beats."""
    settings = hub_settings(redis_url, BrokerSettings(lease_timeout=5, heartbeat_interval=1))
    async with running_hub(settings) as hub:
        async with hub.client() as http:
            grant = await http.post(
                "/gateway/grants",
                json={"worker_id": "gw-lease", "services": ["comfyui"]},
                headers=OPERATOR,
            )
            assert grant.status_code == 201, grant.text
        client = GatewayClient([hub.url], grant.json()["token"])
        try:
            await client.register_worker("gw-lease", capabilities(), {"lease_timeout_seconds": 40})
            for call in ("register", "heartbeat"):
                if call == "heartbeat":
                    await client.heartbeat("gw-lease")
                deadline = await redis.zscore("workers", "gw-lease")
                assert deadline is not None
                assert deadline - await redis_ms(redis) > 30_000, call
        finally:
            await client.aclose()
