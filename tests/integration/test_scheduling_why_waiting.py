""" "Why is my job waiting" names the scheduling policy holding a job back, with its bound
(GET /jobs/{id}), and the dashboards show the scheduling state: fair share per customer on
the hub's, the policies in force on the worker's."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from hub.priority import PriorityPolicy
from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.factories import job
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

SDXL_WARM = capabilities(services=("sim",), models=["sdxl", "flux"], warm_models=["sdxl"])


@pytest.fixture
def affinity_settings(broker_settings: BrokerSettings) -> BrokerSettings:
    return replace(broker_settings, scheduling_policies=("affinity",), affinity_max_delay=600.0)


@pytest.fixture
async def api(
    redis_url: str, affinity_settings: BrokerSettings
) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, affinity_settings)) as client:
        yield client


async def ran_for(broker: Broker, since_ms: int, ms: int) -> None:
    """Wait until `ms` of Redis time (the clock usage is charged by) passed `since_ms`."""

    async def elapsed() -> bool:
        return await broker.reads.now_ms() >= since_ms + ms

    await wait_until(elapsed, message=f"{ms} ms of Redis time")


def iso_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_job_held_by_affinity_says_so_with_its_bound(
    api: httpx.AsyncClient, redis: Redis, affinity_settings: BrokerSettings
) -> None:
    broker = Broker(redis, affinity_settings)
    await start_worker(broker, "w1", SDXL_WARM)
    await broker.submit(job(id="cold", requirements={"models": ["flux"]}))
    await broker.submit(job(id="warm", requirements={"models": ["sdxl"]}))
    assert (await claim(broker, "w1", SDXL_WARM)).job.id == "warm"
    await start_worker(broker, "w2", SDXL_WARM)  # idle and able: only the policy holds it

    response = await api.get("/jobs/cold", headers=CLIENT)
    assert response.status_code == 200
    doc = response.json()
    waiting = doc["waiting"]
    assert waiting["reason"] == "held_by_policy"
    held = waiting["held"]
    assert held["policy"] == "affinity"
    assert iso_ms(held["until"]) - iso_ms(held["since"]) == 600_000
    assert 0 < held["remaining_seconds"] <= 600
    assert f"taken by {held['until']} at the latest" in waiting["message"]
    assert (doc["held_by"], doc["held_until"]) == ("affinity", held["until"])


async def test_a_job_no_policy_held_is_explained_as_before(
    api: httpx.AsyncClient, redis: Redis, affinity_settings: BrokerSettings
) -> None:
    broker = Broker(redis, affinity_settings)
    await start_worker(broker, "w1", SDXL_WARM)
    await broker.submit(job(id="plain"))
    waiting = (await api.get("/jobs/plain", headers=CLIENT)).json()["waiting"]
    assert waiting["reason"] == "queued"
    assert waiting["held"] is None


async def test_the_hub_dashboard_shows_each_customers_fair_share(
    redis_url: str, redis: Redis, broker_settings: BrokerSettings
) -> None:
    fair = replace(broker_settings, scheduling_policies=("fair",))
    broker = Broker(redis, fair)
    offer = capabilities(services=("sim",))
    for customer in ("acme", "beta"):
        await broker.submit(job(customer_id=customer))
        taken = await claim(broker, "w", offer)
        assert taken.job.customer_id == customer
        await ran_for(broker, taken.job.claimed_at or 0, 20)
        assert await broker.complete("w", taken.job.id, taken.token, None) == "ok"  # charged
    # The hub publishes the weights of its tiers (FAIR_SHARE_WEIGHTS) when it starts.
    tiers = PriorityPolicy(
        tier_bonus={"premium": 0}, customer_tiers={"acme": "premium"}, tier_weight={"premium": 3}
    )
    async with hub_client(hub_settings(redis_url, fair, priority=tiers)) as api:
        data = (await api.get("/dashboard/data", headers=OPERATOR)).json()
    rows = {r["customer"]: r for r in data["fair_share"]}
    assert set(rows) == {"acme", "beta"}
    assert (rows["acme"]["weight"], rows["beta"]["weight"]) == (3.0, 1.0)
    assert rows["acme"]["entitled"] == 0.75
    assert rows["acme"]["share"] + rows["beta"]["share"] == pytest.approx(1.0, abs=1e-3)
    assert all(r["pool"] == "default" for r in rows.values())
