"""Subscriptions per connection are capped: one socket cannot grow the hub's fan-out
indexes without bound (security issue item 3). The cost of each subscribe is counted in
tests/unit/test_hub_events.py; here the cap is checked on the wire, on /ws and on the
original protocol's client socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.factories import job as job_request
from tests.hub_support import (
    CLIENT_TOKEN,
    RunningHub,
    hub_settings,
    recv_json,
    running_hub,
    ws_connect,
)

CAP = 5


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[RunningHub]:
    settings = hub_settings(redis_url, BrokerSettings(), max_subscriptions=CAP)
    async with running_hub(settings) as h:
        yield h


async def test_ws_subscriptions_past_the_cap_get_an_error_frame(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: one /ws connection subscribes to thousands of customers and jobs (8,000
    froze a hub for 17.7 s). Refused: past HUB_MAX_SUBSCRIPTIONS the subscribe gets an
    error frame naming `subscriptions`, and nothing more is indexed; unsubscribing makes
    room again."""
    job_id = (await broker.submit(job_request("comfyui", id="capped-job"))).job_id
    async with ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}") as ws:
        await recv_json(ws)
        for i in range(CAP):
            await ws.send(orjson.dumps({"type": "subscribe", "customer_id": f"c{i}"}).decode())
            assert await recv_json(ws) == {"type": "subscribed", "customer_id": f"c{i}"}
        # The same customer again is not a new subscription.
        await ws.send('{"type": "subscribe", "customer_id": "c0"}')
        assert (await recv_json(ws))["type"] == "subscribed"
        for message in (
            {"type": "subscribe", "customer_id": "one-too-many"},
            {"type": "subscribe", "job_id": job_id},
        ):
            await ws.send(orjson.dumps(message).decode())
            reply = await recv_json(ws)
            assert reply["type"] == "error", reply
            assert reply["error"]["field"] == "subscriptions"
        hub_ctx = hub.app.state.hub
        assert sum(len(s) for s in hub_ctx.events.by_customer.values()) == CAP
        assert job_id not in hub_ctx.events.by_job
        await ws.send('{"type": "unsubscribe", "customer_id": "c0"}')
        assert (await recv_json(ws))["type"] == "unsubscribed"
        await ws.send(orjson.dumps({"type": "subscribe", "job_id": job_id}).decode())
        assert await recv_json(ws) == {"type": "subscribed", "job_id": job_id}


async def test_legacy_subscriptions_past_the_cap_are_refused(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: one original-protocol client socket follows job after job (subscribe_job,
    request_job_status, submit_job each follow one). Refused: past the cap each of them
    answers an `error` message (a submission past it writes nothing), and a job whose
    final event was delivered stops counting, so a long-lived submitter is never stuck."""
    ids = [
        (await broker.submit(job_request("comfyui", id=f"legacy-{i}"))).job_id
        for i in range(CAP + 1)
    ]
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as ws:
        await recv_json(ws)
        for job_id in ids[:CAP]:
            await ws.send(orjson.dumps({"type": "subscribe_job", "job_id": job_id}).decode())
            assert (await recv_json(ws))["type"] == "subscription_confirmed"
        for message in (
            {"type": "subscribe_job", "job_id": ids[CAP]},
            {"type": "request_job_status", "job_id": ids[CAP]},
            {"type": "submit_job", "job_type": "comfyui", "message_id": "legacy-new"},
        ):
            await ws.send(orjson.dumps(message).decode())
            reply = await recv_json(ws)
            assert reply["type"] == "error", reply
            assert "subscriptions" in reply["error"]
        assert await broker.get("legacy-new") is None
        await broker.cancel(ids[0], "done with it")
        while (await recv_json(ws))["type"] != "response_job_status":
            pass
        await ws.send(orjson.dumps({"type": "subscribe_job", "job_id": ids[CAP]}).decode())
        assert (await recv_json(ws))["type"] == "subscription_confirmed"
