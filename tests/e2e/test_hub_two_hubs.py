"""Two hubs on one Redis: events produced anywhere reach clients of any hub."""

from __future__ import annotations

import asyncio

import orjson

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.hub_support import (
    CLIENT,
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    claim,
    hub_settings,
    recv_json,
    recv_until,
    running_hub,
    start_worker,
    ws_connect,
)


async def test_submit_on_one_hub_stream_on_the_other(
    redis_url: str, broker_settings: BrokerSettings, broker: Broker
) -> None:
    settings = hub_settings(redis_url, broker_settings)
    async with (
        running_hub(settings) as hub_a,
        running_hub(settings) as hub_b,
        ws_connect(f"{hub_b.ws_url}/ws?token={OPERATOR_TOKEN}") as everything,
        ws_connect(f"{hub_b.ws_url}/ws?token={CLIENT_TOKEN}") as follower,
    ):
        await recv_json(everything)
        await recv_json(follower)
        await everything.send('{"type": "subscribe", "all": true}')
        await recv_json(everything)

        async with hub_a.client() as http_a:
            response = await http_a.post(
                "/jobs", json={"service_type": "comfyui", "customer_id": "c1"}, headers=CLIENT
            )
        assert response.status_code == 201
        job_id = response.json()["id"]
        accepted = await recv_json(everything)
        assert accepted["event"]["event"] == "accepted"
        assert accepted["event"]["job_id"] == job_id

        await follower.send(orjson.dumps({"type": "subscribe", "job_id": job_id}).decode())
        await recv_json(follower)
        assert (await recv_json(follower))["job"]["status"] == "pending"

        async with hub_b.client() as http_b:
            long_poll = asyncio.create_task(http_b.get(f"/jobs/{job_id}?wait=10", headers=CLIENT))
            caps = await start_worker(broker, "w1")
            got = await claim(broker, "w1", caps)
            await broker.progress("w1", job_id, got.token, 50, "half way")
            await broker.complete("w1", job_id, got.token, {"url": "https://x/y.png"})
            finished = await long_poll
        assert finished.json()["status"] == "completed"

        done, seen = await recv_until(
            follower, lambda m: m.get("event", {}).get("event") == "completed"
        )
        assert [m["event"]["event"] for m in seen] == ["claimed", "progress"]
        assert [m["event"]["seq"] for m in [*seen, done]] == [2, 3, 4]
        up, _ = await recv_until(
            everything, lambda m: m.get("event", {}).get("event") == "worker_up"
        )
        assert up["event"]["worker_id"] == "w1"
