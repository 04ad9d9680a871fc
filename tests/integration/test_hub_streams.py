"""Live events over a real TCP server: the /ws protocol, Server-Sent Events, and the
original emp-redis client/monitor protocol."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.hub_support import (
    ACME,
    ACME_TOKEN,
    CLIENT,
    CLIENT_TOKEN,
    OPERATOR,
    OPERATOR_TOKEN,
    RunningHub,
    claim,
    recv_json,
    recv_until,
    running_hub,
    start_worker,
    ws_connect,
)


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    from tests.hub_support import hub_settings

    async with running_hub(hub_settings(redis_url, broker_settings, stats_interval=0.2)) as h:
        yield h


async def submit(hub: RunningHub, headers: dict[str, str] = CLIENT, **body: Any) -> str:
    body.setdefault("service_type", "comfyui")
    async with hub.client() as http:
        response = await http.post("/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert isinstance(job_id, str)
    return job_id


async def run_job(broker: Broker, worker_id: str = "w1", result: Any = None) -> str:
    caps = await start_worker(broker, worker_id)
    got = await claim(broker, worker_id, caps)
    for pct in (10, 50, 90):
        await broker.progress(worker_id, got.job.id, got.token, pct, f"step {pct}")
    await broker.complete(worker_id, got.job.id, got.token, result or {"ok": True})
    return got.job.id


def is_event(kind: str) -> Any:
    return lambda m: m.get("type") == "event" and m["event"]["event"] == kind


async def test_job_subscription_is_ordered_and_gap_free(hub: RunningHub, broker: Broker) -> None:
    job_id = await submit(hub)
    async with ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        await ws.send(orjson.dumps({"type": "subscribe", "job_id": job_id}).decode())
        assert await recv_json(ws) == {"type": "subscribed", "job_id": job_id}
        snapshot = await recv_json(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["job"]["event_seq"] == 1
        await run_job(broker)
        done, seen = await recv_until(ws, is_event("completed"))
        events = [m["event"] for m in [*seen, done]]
        assert [e["event"] for e in events] == [
            "claimed", "progress", "progress", "progress", "completed"
        ]  # fmt: skip
        assert [e["seq"] for e in events] == [2, 3, 4, 5, 6]
        assert events[1]["data"] == {"progress": 10, "message": "step 10"}
        assert all(e["job_id"] == job_id for e in events)


async def test_subscribing_mid_flight_sends_no_duplicates(hub: RunningHub, broker: Broker) -> None:
    job_id = await submit(hub)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    await broker.progress("w1", job_id, got.token, 30)
    async with ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}") as ws:
        await recv_json(ws)
        await ws.send(orjson.dumps({"type": "subscribe", "job_id": job_id}).decode())
        await recv_json(ws)
        snapshot = (await recv_json(ws))["job"]
        assert (snapshot["status"], snapshot["progress"], snapshot["event_seq"]) == (
            "active",
            30,
            3,
        )
        await broker.progress("w1", job_id, got.token, 60)
        await broker.complete("w1", job_id, got.token, {})
        done, seen = await recv_until(ws, is_event("completed"))
        assert [m["event"]["seq"] for m in [*seen, done]] == [4, 5]


async def test_customer_and_everything_subscriptions(hub: RunningHub, broker: Broker) -> None:
    async with (
        ws_connect(f"{hub.ws_url}/ws?token={ACME_TOKEN}") as acme,
        ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ops,
    ):
        await recv_json(acme)
        await recv_json(ops)
        await acme.send('{"type": "subscribe", "customer_id": "globex"}')
        assert (await recv_json(acme))["error"]["field"] == "customer_id"
        await acme.send('{"type": "subscribe", "customer_id": "acme"}')
        assert await recv_json(acme) == {"type": "subscribed", "customer_id": "acme"}
        await ops.send('{"type": "subscribe", "all": true}')
        assert await recv_json(ops) == {"type": "subscribed", "all": True}

        await submit(hub, CLIENT, customer_id="globex")
        mine = await submit(hub, ACME)
        accepted = await recv_json(acme)
        assert accepted["event"]["event"] == "accepted"
        assert accepted["event"]["job_id"] == mine  # globex's job never reached acme
        first, _ = await recv_until(ops, is_event("accepted"))
        second, _ = await recv_until(ops, is_event("accepted"))
        assert {first["event"]["customer_id"], second["event"]["customer_id"]} == {"globex", "acme"}
        await start_worker(broker, "w9")
        up, _ = await recv_until(ops, is_event("worker_up"))
        assert up["event"]["worker_id"] == "w9"
        assert up["event"]["kind"] == "worker"


async def test_bad_messages_get_errors_and_the_socket_stays(hub: RunningHub) -> None:
    async with ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}") as ws:
        await recv_json(ws)
        for text, field in [
            ("{nope", "body"),
            ("[1]", "body"),
            ('{"type": "dance"}', "type"),
            ('{"type": "subscribe"}', "job_id"),
            ('{"type": "subscribe", "job_id": "job-missing"}', "job_id"),
        ]:
            await ws.send(text)
            reply = await recv_json(ws)
            assert reply["type"] == "error"
            assert reply["error"]["field"] == field
        await ws.send('{"type": "ping"}')
        assert await recv_json(ws) == {"type": "pong"}


async def test_sse_streams_a_job_until_it_completes(hub: RunningHub, broker: Broker) -> None:
    job_id = await submit(hub)
    frames: list[tuple[str, dict[str, Any]]] = []
    async with (
        httpx.AsyncClient(base_url=hub.url, timeout=10) as http,
        http.stream("GET", f"/jobs/{job_id}/events?token={CLIENT_TOKEN}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        started = False
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                frames.append((event, orjson.loads(line[6:])))
                if not started:
                    started = True
                    await run_job(broker, result={"images": ["x.png"]})
    kinds = [k for k, _ in frames]
    assert kinds == ["snapshot", "claimed", "progress", "progress", "progress", "completed"]
    assert frames[0][1]["id"] == job_id
    assert [d["seq"] for _, d in frames[1:]] == [2, 3, 4, 5, 6]


async def test_sse_of_a_finished_job_is_one_snapshot(hub: RunningHub, broker: Broker) -> None:
    job_id = await submit(hub)
    await run_job(broker)
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        response = await http.get(f"/jobs/{job_id}/events", headers=CLIENT)
        assert response.status_code == 200
        assert response.text.count("event: ") == 1
        assert "event: snapshot" in response.text
        assert (await http.get("/jobs/job-x/events", headers=CLIENT)).status_code == 404
        assert (await http.get(f"/jobs/{job_id}/events", headers=ACME)).status_code == 404


# -- the original protocol --------------------------------------------------------------


async def test_legacy_client_submit_and_relays(hub: RunningHub, broker: Broker) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as ws:
        hello = await recv_json(ws)
        assert hello["type"] == "connection_established"
        await ws.send(orjson.dumps({"type": "submit_job", "job_type": "comfyui", "priority": 5,
                                    "payload": {"prompt": "cat"}, "message_id": "m-1"}).decode())  # fmt: skip
        accepted = await recv_json(ws)
        assert accepted["type"] == "job_accepted"
        assert accepted["job_id"] == "m-1"
        assert accepted["status"] == "pending"
        assert accepted["position"] == 1
        await run_job(broker, result={"images": ["a.png"]})
        done, seen = await recv_until(ws, lambda m: m["type"] == "complete_job")
        assert done["result"] == {"images": ["a.png"]}
        assert done["worker_id"] == "w1"
        types = [m["type"] for m in seen]
        assert types == ["response_job_status"] + ["update_job_progress"] * 3
        assert seen[0]["status"] == "processing"
        assert [m["progress"] for m in seen[1:]] == [10, 50, 90]

        await ws.send('{"type": "request_job_status", "job_id": "m-1"}')
        status = await recv_json(ws)
        assert status["type"] == "response_job_status"
        assert (status["status"], status["result"]) == ("completed", {"images": ["a.png"]})
        await ws.send('{"type": "stay_alive"}')
        alive = await recv_json(ws)
        assert (alive["job_id"], alive["status"]) == ("keep-alive", "acknowledged")
        await ws.send('{"type": "fly"}')
        assert (await recv_json(ws))["error"] == "Unsupported message type: fly"
        await ws.send('{"type": "submit_job", "job_type": "Bad Type"}')
        assert (await recv_json(ws))["type"] == "error"


async def test_legacy_cancel_and_subscribe(hub: RunningHub, broker: Broker) -> None:
    job_id = await submit(hub)
    async with ws_connect(f"{hub.ws_url}/ws/client/c2?token={CLIENT_TOKEN}") as ws:
        await recv_json(ws)
        await ws.send(orjson.dumps({"type": "subscribe_job", "job_id": job_id}).decode())
        assert (await recv_json(ws)) | {"timestamp": 0} == {
            "type": "subscription_confirmed", "job_id": job_id, "timestamp": 0
        }  # fmt: skip
        await ws.send(orjson.dumps({"type": "cancel_job", "job_id": job_id}).decode())
        reply = await recv_json(ws)  # one: the relay of the followed job's cancellation
        assert (reply["type"], reply["status"]) == ("response_job_status", "cancelled")
        await ws.send(orjson.dumps({"type": "force_retry_job", "job_id": job_id}).decode())
        assert "operator" in (await recv_json(ws))["error"]


async def test_legacy_monitor_gets_stats_and_relays(hub: RunningHub, broker: Broker) -> None:
    async with (
        ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as mon,
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as _client,
    ):
        assert (await recv_json(mon))["type"] == "connection_established"
        stats, _ = await recv_until(
            mon, lambda m: m["type"] == "stats_broadcast" and "c1" in m["connections"]["clients"]
        )
        assert set(stats) >= {"connections", "workers", "subscriptions", "system"}
        assert stats["connections"]["monitors"] == ["m1"]
        await submit(hub, OPERATOR)
        await start_worker(broker, "w1")
        status, _ = await recv_until(mon, lambda m: m["type"] == "worker_status")
        assert status["worker_id"] == "w1"
        stats, _ = await recv_until(
            mon, lambda m: m["type"] == "stats_broadcast" and m["system"]["queues"]["total"] == 1
        )
        assert stats["workers"]["w1"]["supported_job_types"] == ["comfyui"]
        assert stats["system"]["jobs"]["active_jobs"][0]["job_type"] == "comfyui"
        await mon.send('{"type": "stay_alive"}')
        await recv_until(mon, lambda m: m["type"] == "stay_alive_response")


async def test_streams_end_when_the_hub_stops(
    redis_url: str, broker_settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Open streams do not hold up a graceful stop: the hub ends them itself, so uvicorn
    never reaches its graceful-shutdown timeout (running_hub: 2 s) and never has to cancel
    them. Checked by what happened, not by how long it took: uvicorn logs an error when it
    cancels, a cancelled SSE response would end without its closing chunk (httpx raises),
    and a WebSocket cut by uvicorn would not get the hub's own close code, 1001."""
    from tests.hub_support import hub_settings

    caplog.set_level(logging.INFO, logger="uvicorn.error")
    async with running_hub(hub_settings(redis_url, broker_settings)) as hub:
        job_id = await submit(hub)
        http = httpx.AsyncClient(base_url=hub.url, timeout=10)
        stream = http.stream("GET", f"/jobs/{job_id}/events", headers=CLIENT)
        response = await stream.__aenter__()
        ws_cm = ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}")
        ws = await ws_cm.__aenter__()
        await recv_json(ws)
    # Leaving the block shut the server down with both streams still open on our side.
    cancelled = [
        r.getMessage() for r in caplog.records if "graceful shutdown exceeded" in r.getMessage()
    ]
    assert cancelled == []
    body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert b"event: snapshot" in body
    await stream.__aexit__(None, None, None)
    await http.aclose()
    await ws.wait_closed()
    assert ws.close_code == 1001
    await ws_cm.__aexit__(None, None, None)
