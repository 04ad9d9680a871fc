"""Effective priority cannot be bought with a deadline (security issue item 4).

A deadline already in the past used to earn the full urgency bonus at once:
`{"priority": 100, "deadline": "2020-01-01T00:00:00Z"}` ran at 200, so any client could
add 100 points to every job. Past deadlines are refused on every submission path, and a
client token may carry a ceiling on the effective priority of its jobs, which also holds
when the maintenance loop re-scores them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from hub.maintenance import Maintenance
from hub.settings import HubSettings
from shared.broker import Broker
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.hub_support import (
    CLIENT,
    CLIENT_TOKEN,
    hub_client,
    hub_settings,
    recv_json,
    running_hub,
    ws_connect,
)

PAST = "2020-01-01T00:00:00Z"
CAPPED_TOKEN = "capped-client-token-1"
CAPPED = {"Authorization": f"Bearer {CAPPED_TOKEN}"}
CEILING = 60


def settings_with_ceiling(redis_url: str) -> HubSettings:
    env = {
        "HUB_AUTH_TOKEN": f"{CLIENT_TOKEN},{CAPPED_TOKEN}:acme:max_priority={CEILING}",
        "HUB_OPERATOR_TOKEN": "operator-token-0001",
        "HUB_REDIS_URL": redis_url,
    }
    return dataclasses.replace(HubSettings.from_env(env), maintenance=False, fleet_cache_seconds=0)


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url)) as client:
        yield client


@pytest.fixture
async def capped_api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(settings_with_ceiling(redis_url)) as client:
        yield client


async def keys(redis: Redis) -> list[str]:
    return sorted(as_text(key) for key in await redis.keys("*"))


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_a_past_deadline_is_refused_on_every_rest_path(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    """Attack: `{"priority": 100, "deadline": "2020-01-01T00:00:00Z"}` on POST /jobs and
    POST /jobs/batch, to run at effective priority 200. Refused: 400 naming `deadline`
    (`jobs[i].deadline` in a batch), nothing written."""
    before = await keys(redis)
    job: dict[str, Any] = {"service_type": "comfyui", "priority": 100, "deadline": PAST}
    single = await api.post("/jobs", json=job, headers=CLIENT)
    assert single.status_code == 400, single.text
    assert single.json()["error"]["field"] == "deadline"
    ok = {"service_type": "comfyui"}
    batch = await api.post("/jobs/batch", json={"jobs": [ok, job]}, headers=CLIENT)
    assert batch.status_code == 400, batch.text
    assert batch.json()["error"]["field"] == "jobs[1].deadline"
    assert await keys(redis) == before
    # A deadline still ahead is accepted, and earns at most its share of urgency.
    later = await api.post("/jobs", json={**job, "deadline": soon(7200)}, headers=CLIENT)
    assert later.status_code == 201, later.text
    assert later.json()["effective_priority"] == 100


async def test_a_past_deadline_is_refused_on_the_legacy_socket(
    redis_url: str, broker: Broker
) -> None:
    """Attack: the same past deadline through the original protocol's `submit_job`.
    Refused: an `error` message naming the deadline, and no job."""
    async with (
        running_hub(hub_settings(redis_url, BrokerSettings())) as hub,
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as ws,
    ):
        await recv_json(ws)
        message = {"type": "submit_job", "job_type": "comfyui", "priority": 10,
                   "deadline": PAST, "message_id": "legacy-past"}  # fmt: skip
        await ws.send(orjson.dumps(message).decode())
        reply = await recv_json(ws)
        assert reply["type"] == "error", reply
        assert "deadline" in reply["error"]
    assert await broker.get("legacy-past") is None


async def test_a_token_ceiling_caps_effective_priority_at_submission_and_aging(
    capped_api: httpx.AsyncClient, redis: Redis
) -> None:
    """Attack: a client with a capped token asks for priority 100 and a deadline a second
    away (full urgency as soon as it passes), then waits for aging. Refused: its job never
    ranks above the token's `max_priority`, at submission or when re-scored."""
    body = {"service_type": "comfyui", "priority": 100, "deadline": soon(1)}
    response = await capped_api.post("/jobs", json=body, headers=CAPPED)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["effective_priority"] == CEILING
    # Make the job old and its deadline long past, then let maintenance re-score it.
    seconds, _ = await redis.time()
    now_ms = int(seconds) * 1000
    job_key = f"job:{job_id}"
    await redis.hset(job_key, mapping={"created_at": now_ms - 7_200_000, "deadline": now_ms - 1})
    hub = capped_api.hub_app.state.hub  # type: ignore[attr-defined]
    await Maintenance(hub.broker, hub.settings).age()
    assert int(as_text(await redis.hget(job_key, "effective_priority"))) == CEILING
    # An uncapped token's job in the same position does age above it.
    other = await capped_api.post("/jobs", json={"service_type": "comfyui", "priority": 100},
                           headers=CLIENT)  # fmt: skip
    other_key = f"job:{other.json()['id']}"
    await redis.hset(other_key, "created_at", now_ms - 7_200_000)
    await Maintenance(hub.broker, hub.settings).age()
    assert int(as_text(await redis.hget(other_key, "effective_priority"))) == 200
