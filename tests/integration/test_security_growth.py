"""Nothing a client sends grows without bound (security issue item 9).

- `/metrics`: every client-chosen `service_type` became a label of its own, forever.
- A pending job that no worker can ever take waited forever.
- Requests: a client token could send as many as it liked, to every hub.
"""

from __future__ import annotations

import asyncio
import dataclasses

from redis.asyncio import Redis

from hub.maintenance import Maintenance
from shared.broker import Broker
from shared.job import JobStatus
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.factories import job as job_request
from tests.helpers import stream_fields, wait_until
from tests.hub_support import (
    ACME,
    CLIENT,
    OPERATOR,
    capabilities,
    hub_client,
    hub_settings,
    start_worker,
)


async def test_metrics_label_only_services_some_worker_offers(
    redis_url: str, broker: Broker
) -> None:
    """Attack: submit jobs under thousands of invented service names, each of which became
    an `emp_queue_depth` label (a time series) of its own. Refused: only services a live
    worker offers are labels; every other pending job counts under `other`."""
    await start_worker(broker, "w1", capabilities(services=("comfyui",)))
    async with hub_client(hub_settings(redis_url)) as api:
        invented = [{"service_type": f"made-up-{n}"} for n in range(200)]
        batch = await api.post("/jobs/batch", json={"jobs": invented}, headers=CLIENT)
        assert batch.status_code == 201, batch.text
        for _ in range(3):
            assert (await api.post("/jobs", json={"service_type": "comfyui"},
                                   headers=CLIENT)).status_code == 201  # fmt: skip
        text = (await api.get("/metrics", headers=OPERATOR)).text
    depth = [line for line in text.splitlines() if line.startswith("emp_queue_depth{")]
    assert sorted(depth) == [
        'emp_queue_depth{pool="default",service="comfyui"} 3.0',
        'emp_queue_depth{pool="default",service="other"} 200.0',
    ]
    assert "made-up" not in text


async def test_a_job_no_worker_takes_fails_after_the_maximum_pending_age(
    redis_url: str, redis: Redis
) -> None:
    """Attack: a job for a service (or requirements) no worker offers waits forever, and so
    does its hash. Refused: with HUB_MAX_PENDING_SECONDS set, a job no worker claimed in
    that time fails with "no worker took it", exactly once even with two hubs' maintenance
    running at once; a job a worker did take is left alone."""
    settings = hub_settings(redis_url, BrokerSettings(), max_pending_seconds=0.2)
    broker = Broker(redis, settings.broker)
    stranded = (await broker.submit(job_request("nobody-runs-this"))).job_id
    caps = await start_worker(broker, "w1", capabilities(services=("comfyui",)))
    taken = (await broker.submit(job_request("comfyui", max_retries=2))).job_id
    claimed = await broker.claim("w1", caps)
    await broker.fail("w1", taken, claimed.token, "boom")  # type: ignore[union-attr]
    hubs = [Maintenance(broker, settings), Maintenance(broker, settings)]
    expired = 0

    async def stranded_failed() -> bool:
        nonlocal expired
        reports = await asyncio.gather(*(h.tick(force=True) for h in hubs))
        expired += sum(r["expired"] for r in reports)
        job = await broker.get(stranded)
        return job is not None and job.status == JobStatus.FAILED

    await wait_until(stranded_failed, timeout=20, message="the stranded job failed")
    for h in hubs:
        await h.tick(force=True)
    job = await broker.get(stranded)
    assert job is not None
    assert job.error is not None
    assert job.error.startswith("no worker took it")
    assert expired == 1
    assert await redis.zscore(broker.keys.finished("failed"), stranded) is not None
    assert await redis.zscore(broker.keys.pending, stranded) is None
    assert await redis.ttl(broker.keys.job(stranded)) > 0
    events = await stream_fields(redis, broker.keys.events)
    failed = [e for e in events if e.get(b"job") == stranded.encode() and e[b"type"] == b"failed"]
    assert len(failed) == 1
    retried = await broker.get(taken)
    assert retried is not None
    assert retried.status == JobStatus.PENDING  # taken once: waiting for its retry, kept


async def test_a_client_token_is_rate_limited_across_hubs(redis_url: str, redis: Redis) -> None:
    """Attack: one client token sends requests as fast as it can, spread over several
    hubs. Refused: past HUB_RATE_LIMIT_BURST (refilled at HUB_RATE_LIMIT_PER_SECOND) the
    token gets 429 with Retry-After on every hub, since the bucket is in Redis; another
    token and the operator are not affected, and the token itself is not stored."""
    settings = hub_settings(
        redis_url, BrokerSettings(), rate_limit_per_second=0.01, rate_limit_burst=3
    )
    async with hub_client(settings) as one, hub_client(dataclasses.replace(settings)) as two:
        answers = []
        for api in (one, two, one, two):
            answers.append(await api.get("/jobs", headers=CLIENT))
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["field"] == "Authorization"
        for api in (one, two):
            assert (await api.get("/jobs", headers=ACME)).status_code == 200
            assert (await api.get("/stats", headers=OPERATOR)).status_code == 200
            assert (await api.post("/jobs", json={"service_type": "comfyui"},
                                   headers=CLIENT)).status_code == 429  # fmt: skip
    keys = [as_text(k) for k in await redis.keys("ratelimit:*")]
    assert len(keys) == 2
    assert not any("client-token" in k for k in keys)


async def test_rate_limits_are_off_by_default(redis_url: str) -> None:
    async with hub_client(hub_settings(redis_url)) as api:
        statuses = {(await api.get("/jobs", headers=CLIENT)).status_code for _ in range(150)}
    assert statuses == {200}
