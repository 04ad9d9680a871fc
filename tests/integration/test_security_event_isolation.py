"""A customer-bound token never receives another customer's job events, however it asks.

The attack these reproduce: with acme's client token, send `subscribe` (or, on the original
protocol, `submit_job` with the foreign id) for a globex job in a loop while that job emits
progress. A subscription registered before the visibility check used to queue the foreign
events in between, and the forwarder delivered them: 31 of 32 progress events and the
`completed` event leaked. Each test ends with an event of acme's own, which the hub's single
reader dispatches after every globex event, so every frame that could leak has been sent
(or dropped) by the time it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.hub_support import (
    ACME,
    ACME_TOKEN,
    CLIENT,
    RunningHub,
    claim,
    hub_settings,
    recv_json,
    running_hub,
    start_worker,
    ws_connect,
)

FOREIGN_PROGRESS_EVENTS = 32


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    async with running_hub(hub_settings(redis_url, broker_settings)) as running:
        yield running


async def submit(hub: RunningHub, headers: dict[str, str], **body: Any) -> str:
    async with hub.client() as http:
        response = await http.post(
            "/jobs", json={"service_type": "comfyui", **body}, headers=headers
        )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert isinstance(job_id, str)
    return job_id


async def run_foreign_job(broker: Broker, job_id: str) -> None:
    """globex's job, claimed and run to completion with many progress events."""
    caps = await start_worker(broker, "globex-worker")
    got = await claim(broker, "globex-worker", caps)
    assert got.job.id == job_id
    for step in range(FOREIGN_PROGRESS_EVENTS):
        await broker.progress("globex-worker", job_id, got.token, step * 3)
    await broker.complete("globex-worker", job_id, got.token, {"secret": "globex result"})


async def hammer_until(
    ws: ClientConnection, message: dict[str, Any], done: asyncio.Task[None]
) -> int:
    """Send `message` again and again until `done` finishes; returns how many were sent."""
    sent = 0
    text = orjson.dumps(message).decode()
    while not done.done():
        await ws.send(text)
        sent += 1
        await asyncio.sleep(0)  # let the hub's reader and the worker interleave
    await done
    return sent


async def frames_until(
    ws: ClientConnection, last: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while True:
            frame = await recv_json(ws, timeout=30)
            frames.append(frame)
            if last(frame):
                return frames


def mentions(frame: dict[str, Any], job_id: str) -> bool:
    """Whether any string in the frame is `job_id` (a customer's own `acme~{id}` is not)."""
    return orjson.dumps(job_id).decode() in orjson.dumps(frame).decode()


async def own_progress(broker: Broker, job_id: str) -> None:
    caps = await start_worker(broker, "acme-worker")
    got = await claim(broker, "acme-worker", caps)
    assert got.job.id == job_id
    await broker.progress("acme-worker", job_id, got.token, 50)


async def test_hammering_subscribe_on_a_foreign_job_receives_none_of_its_events(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: with acme's client token, `subscribe` to a globex job again and again on /ws
    while it emits progress (a subscription registered before the visibility check used to
    queue the foreign events: 31 of 32 progress events and `completed` leaked). Refused:
    every subscribe answers "no such job" and no frame names the foreign job."""
    foreign = await submit(hub, CLIENT, customer_id="globex")
    async with ws_connect(f"{hub.ws_url}/ws?token={ACME_TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        worker = asyncio.create_task(run_foreign_job(broker, foreign))
        sent = await hammer_until(ws, {"type": "subscribe", "job_id": foreign}, worker)

        own = await submit(hub, ACME)
        await ws.send(orjson.dumps({"type": "subscribe", "job_id": own}).decode())
        frames = await frames_until(ws, lambda f: f.get("type") == "snapshot")
        await own_progress(broker, own)
        frames += await frames_until(
            ws, lambda f: f.get("type") == "event" and f["event"]["event"] == "progress"
        )

    refusals = [f for f in frames if f.get("type") == "error"]
    leaked = [f for f in frames if f.get("type") != "error" and mentions(f, foreign)]
    assert leaked == []
    assert len(refusals) == sent
    assert all(f["error"] == {"field": "job_id", "message": "no such job"} for f in refusals)
    assert frames[-1]["event"]["job_id"] == own
    assert sent > FOREIGN_PROGRESS_EVENTS  # the subscribes did overlap the foreign events


async def test_hammering_legacy_submit_with_a_foreign_id_receives_none_of_its_events(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: the same on the original protocol: `submit_job` with the foreign job's id as
    `message_id`, in a loop, while that job runs. Refused: no relay of the foreign job
    reaches acme (its id now names a job of acme's own) and its result never appears."""
    foreign = await submit(hub, CLIENT, customer_id="globex")
    async with ws_connect(f"{hub.ws_url}/ws/client/acme-1?token={ACME_TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "connection_established"
        worker = asyncio.create_task(run_foreign_job(broker, foreign))
        resubmit = {"type": "submit_job", "job_type": "comfyui", "message_id": foreign}
        await hammer_until(ws, resubmit, worker)

        # acme's ids are its own (`acme~...`): the resubmissions above made acme a job of
        # its own under the foreign id, so this one outranks it to be claimed first.
        own_id = "acme~acme-own-1"
        own = {
            "type": "submit_job",
            "job_type": "comfyui",
            "message_id": "acme-own-1",
            "priority": 10,
        }  # fmt: skip  (the original's 0-10: the top, 100)
        await ws.send(orjson.dumps(own).decode())
        frames = await frames_until(
            ws, lambda f: f.get("type") == "job_accepted" and f["job_id"] == own_id
        )
        await own_progress(broker, own_id)
        frames += await frames_until(
            ws, lambda f: f.get("type") == "update_job_progress" and f["job_id"] == own_id
        )

    relayed = {"update_job_progress", "complete_job", "fail_job", "response_job_status"}
    leaked = [f for f in frames if f.get("type") in relayed and mentions(f, foreign)]
    assert leaked == []
    assert "globex result" not in orjson.dumps(frames).decode()


async def test_a_customer_subscription_does_not_carry_other_customers_events(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: subscribe to one's own customer and hope the customer index carries
    another's events. Refused: every event is checked against the connection's rights,
    whatever subscription routed it; only acme's own events arrive."""
    foreign = await submit(hub, CLIENT, customer_id="globex")
    async with ws_connect(f"{hub.ws_url}/ws?token={ACME_TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        await ws.send(orjson.dumps({"type": "subscribe", "customer_id": "acme"}).decode())
        assert (await recv_json(ws))["type"] == "subscribed"
        await run_foreign_job(broker, foreign)
        own = await submit(hub, ACME)
        await own_progress(broker, own)
        frames = await frames_until(
            ws, lambda f: f.get("type") == "event" and f["event"]["event"] == "progress"
        )
    assert [f for f in frames if mentions(f, foreign)] == []
