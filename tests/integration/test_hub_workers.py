"""The fleet routes: list and inspect workers, pause / resume / drain them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.broker import Broker, NoClaim
from shared.redis_clock import redis_now_ms
from shared.settings import BrokerSettings
from tests.hub_support import OPERATOR, capabilities, claim, hub_client, hub_settings, start_worker


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


async def test_workers_show_capabilities_status_jobs_and_heartbeat(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    assert (await api.get("/workers", headers=OPERATOR)).json() == {"workers": []}
    caps = await start_worker(broker, "gpu-1", capabilities(gpu_gb=[80]), host="box-1")
    await start_worker(broker, "gpu-2")
    job = (await api.post("/jobs", json={"service_type": "comfyui"}, headers=OPERATOR)).json()
    got = await claim(broker, "gpu-1", caps)
    await broker.heartbeat("gpu-1", status="busy", running={got.job.id: got.token})

    listed = (await api.get("/workers", headers=OPERATOR)).json()["workers"]
    assert {w["id"] for w in listed} == {"gpu-1", "gpu-2"}
    worker = (await api.get("/workers/gpu-1", headers=OPERATOR)).json()
    assert worker["alive"] is True
    assert worker["status"] == "busy"
    assert worker["state"] == "active"
    assert worker["current_jobs"] == [job["id"]]
    assert worker["capabilities"]["services"] == ["comfyui"]
    assert worker["capabilities"]["hardware"]["gpus"][0]["memory_gb"] == 80
    assert worker["info"] == {"host": "box-1"}
    # The age is Redis time since the heartbeat: never more than what has passed by the
    # Redis clock read after the answer (an order, not a wall-clock bound).
    beat = int(await broker.redis.hget(broker.keys.worker("gpu-1"), "last_heartbeat") or 0)
    since_beat = (await redis_now_ms(broker.redis) - beat) / 1000
    assert 0 <= worker["heartbeat_age_seconds"] <= since_beat
    assert worker["counters"] == {"claimed": 1, "completed": 0, "failed": 0}
    assert "token" not in str(worker["current_jobs"])


async def test_unknown_worker_is_404(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/workers/nope"),
        ("POST", "/workers/nope/pause"),
        ("POST", "/workers/nope/resume"),
        ("POST", "/workers/nope/drain"),
    ]:
        response = await api.request(method, path, headers=OPERATOR)
        assert response.status_code == 404
        assert response.json()["error"] == {"field": "id", "message": "no such worker"}
    assert (await api.post("/workers/nope/explode", headers=OPERATOR)).status_code == 404


async def test_pause_resume_drain(api: httpx.AsyncClient, broker: Broker) -> None:
    caps = await start_worker(broker, "w1")
    await api.post("/jobs", json={"service_type": "comfyui"}, headers=OPERATOR)
    for action, state in [("pause", "paused"), ("drain", "draining")]:
        response = await api.post(f"/workers/w1/{action}", headers=OPERATOR)
        assert response.status_code == 200
        assert response.json()["state"] == state
        refused = await broker.claim("w1", caps)
        assert isinstance(refused, NoClaim)
        assert refused.reason == state
    response = await api.post("/workers/w1/resume", headers=OPERATOR)
    assert response.json()["state"] == "active"
    await claim(broker, "w1", caps)


async def test_offline_worker_is_still_visible_by_id(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    await start_worker(broker, "w1")
    await broker.deregister_worker("w1")
    assert (await api.get("/workers", headers=OPERATOR)).json()["workers"] == []
    worker = (await api.get("/workers/w1", headers=OPERATOR)).json()
    assert (worker["alive"], worker["status"]) == (False, "offline")
    assert worker["stopped_at"] is not None


async def test_fleet_cache_rereads_at_most_once_per_interval(broker: Broker) -> None:
    import asyncio

    from hub.fleet import FleetCache
    from shared.worker_view import WorkerView

    reads = 0

    async def counting() -> list[WorkerView]:
        nonlocal reads
        reads += 1
        return await broker.reads.fleet.live()

    cache = FleetCache(counting, max_age=60)
    assert await asyncio.gather(*(cache.get() for _ in range(5))) == [[]] * 5
    assert reads == 1  # concurrent callers shared one read
    await start_worker(broker, "w1")
    assert await cache.get() == []  # still fresh
    fresh = FleetCache(broker.reads.fleet.live, max_age=0)
    assert [w.id for w in await fresh.get()] == ["w1"]


async def test_a_worker_is_shown_idle_from_the_claim_that_finds_nothing_to_its_next_claim(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    caps = await start_worker(broker, "gpu-1")
    assert (await api.get("/workers/gpu-1", headers=OPERATOR)).json()["idle"] is False
    assert await broker.claim("gpu-1", caps) == NoClaim("empty", None)
    assert (await api.get("/workers/gpu-1", headers=OPERATOR)).json()["idle"] is True
    await api.post("/jobs", json={"service_type": "comfyui"}, headers=OPERATOR)
    await claim(broker, "gpu-1", caps)
    assert (await api.get("/workers/gpu-1", headers=OPERATOR)).json()["idle"] is False
