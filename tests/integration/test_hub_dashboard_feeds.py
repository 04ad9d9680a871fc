"""The dashboard's JSON feeds beyond /dashboard/data: the charts' series, a job's timeline,
and the queued jobs' "why is it waiting" in words. Operator-only, like /dashboard/data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from hub.series import MINUTES
from shared.broker import Broker, Claim
from shared.settings import BrokerSettings
from tests.factories import job as job_request
from tests.helpers import wait_until
from tests.hub_support import (
    CLIENT,
    OPERATOR,
    capabilities,
    claim,
    hub_client,
    hub_settings,
    start_worker,
)


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


async def test_series_chart_the_last_hour_from_real_jobs(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    caps = await start_worker(broker, "w1", capabilities(services=("sim",)))
    for _ in range(3):
        await broker.submit(job_request("sim", max_retries=0))
    await broker.submit(job_request("comfyui"))  # nobody offers it: it stays queued
    done = await claim(broker, "w1", caps)
    await broker.complete("w1", done.job.id, done.token, {"ok": True})
    broken = await claim(broker, "w1", caps)
    await broker.fail("w1", broken.job.id, broken.token, "boom")

    response = await api.get("/dashboard/series", headers=OPERATOR)
    assert response.status_code == 200
    doc = response.json()
    assert len(doc["minutes"]) == MINUTES
    assert doc["minutes"][-1] <= doc["now"] < doc["minutes"][-1] + 60_000
    assert sum(doc["throughput"]["submitted"]) == 4
    assert sum(doc["throughput"]["completed"]) == 1
    assert sum(doc["throughput"]["failed"]) == 1
    assert sum(doc["wait_ms"]["claims"]) == 2
    assert [v for v in doc["wait_ms"]["p50"] if v is not None]
    assert [v for v in doc["wait_ms"]["p95"] if v is not None]
    # No maintenance ran (no samples), but the current minute's depth is read live.
    assert doc["depth"] == {
        "sim": [None] * (MINUTES - 1) + [1],
        "comfyui": [None] * (MINUTES - 1) + [1],
    }


async def test_a_jobs_timeline_has_its_events_in_order_with_workers_and_timings(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    caps = await start_worker(broker, "w1", capabilities(services=("sim",)))
    await start_worker(broker, "w2", capabilities(services=("sim",)))
    job_id = (await broker.submit(job_request("sim", max_retries=2))).job_id
    first = await claim(broker, "w1", caps)
    await broker.progress("w1", job_id, first.token, 30, "step 1/3")
    assert await broker.fail("w1", job_id, first.token, "CUDA out of memory") == "retrying"

    async def claimed_again() -> Claim | None:  # once the retry's backoff is over
        got = await broker.claim("w2", caps)
        return got if isinstance(got, Claim) else None

    second = await wait_until(claimed_again, message="w2 claimed the retry")
    await broker.complete("w2", job_id, second.token, {"images": []})

    response = await api.get(f"/dashboard/jobs/{job_id}/timeline", headers=OPERATOR)
    assert response.status_code == 200
    doc = response.json()
    assert doc["missing"] == 0
    events = doc["events"]
    assert [e["event"] for e in events] == [
        "accepted", "claimed", "progress", "retrying", "claimed", "completed",
    ]  # fmt: skip
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert [e["worker_id"] for e in events if e["event"] == "claimed"] == ["w1", "w2"]
    assert events[3]["data"]["error"] == "CUDA out of memory"
    assert events[-1]["data"]["run_ms"] >= 0
    assert all(e["job_id"] == job_id for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


async def test_the_feeds_are_for_operators_only(api: httpx.AsyncClient, broker: Broker) -> None:
    job_id = (await broker.submit(job_request("sim"))).job_id
    for path in ("/dashboard/series", f"/dashboard/jobs/{job_id}/timeline"):
        assert (await api.get(path)).status_code == 401
        assert (await api.get(path, headers=CLIENT)).status_code == 403
    missing = await api.get("/dashboard/jobs/no-such-job/timeline", headers=OPERATOR)
    assert missing.status_code == 404


async def test_queued_jobs_say_why_they_wait_in_words(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    await start_worker(broker, "w1", capabilities(services=("sim",), gpu_gb=(24.0,)))
    big = {"hardware": {"gpu": {"memory_gb": 80}}}
    await broker.submit(job_request("sim", requirements=big))
    await broker.submit(job_request("upscale"))
    await broker.submit(job_request("sim"))
    data = (await api.get("/dashboard/data", headers=OPERATOR)).json()
    waiting = {j["service_type"] + ("-80gb" if j["requirements"].get("hardware") else ""):
               j["waiting"] for j in data["pending"]}  # fmt: skip
    assert waiting["sim-80gb"]["reason"] == "no_capable_worker"
    assert "needs 1 GPU(s) >= 80 GB" in waiting["sim-80gb"]["message"]
    assert waiting["upscale"]["message"] == "no worker offers service 'upscale'"
    assert waiting["sim"]["reason"] == "queued"
    assert waiting["sim"]["message"].startswith("1 capable worker(s) idle")


async def test_a_timeline_counts_the_events_the_capped_stream_no_longer_holds(
    api: httpx.AsyncClient, broker: Broker, redis: Redis
) -> None:
    caps = await start_worker(broker, "w1", capabilities(services=("sim",)))
    job_id = (await broker.submit(job_request("sim"))).job_id
    await redis.xtrim(broker.keys.events, maxlen=0)  # as if 100,000 events had come since
    got = await claim(broker, "w1", caps)
    await broker.complete("w1", job_id, got.token, {"ok": True})
    doc = (await api.get(f"/dashboard/jobs/{job_id}/timeline", headers=OPERATOR)).json()
    assert [e["event"] for e in doc["events"]] == ["claimed", "completed"]
    assert doc["missing"] == 1  # "accepted"
