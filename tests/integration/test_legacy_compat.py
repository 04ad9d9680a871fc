"""Drop-in compatibility with existing emp-redis clients (issue 15), over a real socket and
a real Redis. The expected shapes are written down from the original protocol
(docs/PROTOCOL-LEGACY.md and the original's message models: `UpdateJobProgressMessage`,
`FailJobMessage`, `CompleteJobMessage`, `SubscriptionConfirmedMessage`, ...), not from
this hub's output."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import (
    ACME_TOKEN,
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    RunningHub,
    capabilities,
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

    async with running_hub(hub_settings(redis_url, broker_settings)) as h:
        yield h


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(orjson.dumps(message).decode())


async def connected(ws: ClientConnection) -> None:
    assert (await recv_json(ws))["type"] == "connection_established"


def is_original_str(value: Any) -> bool:
    return isinstance(value, str)


def is_original_progress(value: Any) -> bool:
    # `progress: int` with the validator -1 <= v <= 100; a bool is no progress.
    return isinstance(value, int) and not isinstance(value, bool) and -1 <= value <= 100


# -- items 2 and 5: relays carry worker_id, an integer progress, and client_id for monitors


async def test_progress_and_failure_relays_fit_the_original_models(
    hub: RunningHub, broker: Broker
) -> None:
    async with (
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client,
        ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as monitor,
    ):
        await connected(client)
        await connected(monitor)
        await send(client, type="submit_job", job_type="comfyui", payload={}, message_id="j-2")
        assert (await recv_json(client))["type"] == "job_accepted"
        caps = await start_worker(broker, "w1")
        got = await claim(broker, "w1", caps)
        await broker.progress("w1", got.job.id, got.token, 66.6667, "two thirds")
        await broker.fail("w1", got.job.id, got.token, "CUDA out of memory")

        for ws, role in ((client, "client"), (monitor, "monitor")):
            progress, _ = await recv_until(ws, lambda m: m["type"] == "update_job_progress")
            assert progress["job_id"] == "j-2"
            assert is_original_str(progress["worker_id"])
            assert progress["worker_id"] == "w1"
            assert is_original_progress(progress["progress"])
            assert progress["progress"] == 67
            assert progress["status"] == "processing"
            assert progress["message"] == "two thirds"
            failed, _ = await recv_until(ws, lambda m: m["type"] == "fail_job")
            assert failed["job_id"] == "j-2"
            assert is_original_str(failed["worker_id"])
            assert failed["worker_id"] == "w1"
            assert failed["error"] == "CUDA out of memory"
            # Monitors are told who submitted the job ("Client: c1" on the page); a
            # client's own relays are as the original sent them to the subscriber.
            if role == "client":
                # A status read mid-run has the same integer progress.
                await send(ws, type="request_job_status", job_id="j-2")
                status, _ = await recv_until(ws, lambda m: m["type"] == "response_job_status")
                assert type(status["progress"]) is int
            if role == "monitor":
                assert progress["client_id"] == "c1"
                assert failed["client_id"] == "c1"
            else:
                assert "client_id" not in progress
                assert "client_id" not in failed


async def test_monitors_name_rest_submitted_jobs_as_the_original_did(
    hub: RunningHub, broker: Broker
) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as monitor:
        await connected(monitor)
        async with hub.client() as http:
            response = await http.post(
                "/jobs",
                json={"service_type": "comfyui", "id": "r-1"},
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
            )
        assert response.status_code == 201, response.text
        caps = await start_worker(broker, "w1")
        got = await claim(broker, "w1", caps)
        await broker.complete("w1", got.job.id, got.token, {"ok": True})
        done, _ = await recv_until(monitor, lambda m: m["type"] == "complete_job")
        assert (done["job_id"], done["worker_id"], done["result"]) == ("r-1", "w1", {"ok": True})
        assert done["client_id"] == "rest-api-client"


# -- item 6: a monitor's `subscribe` is confirmed with a job_id


async def test_monitor_subscribe_confirmation_fits_the_original_model(hub: RunningHub) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as monitor:
        await connected(monitor)
        await send(monitor, type="subscribe", channels=["worker_status", "stats_broadcast"])
        confirmed, _ = await recv_until(monitor, lambda m: m["type"] == "subscription_confirmed")
        # SubscriptionConfirmedMessage: job_id (str, required), monitor_id, channels.
        assert is_original_str(confirmed["job_id"])
        assert confirmed["monitor_id"] == "m1"
        assert confirmed["channels"] == ["stats_broadcast", "worker_status"]


# -- item 11: a cancel is answered with one response_job_status


@pytest.mark.parametrize("follows", [True, False], ids=["submitter", "stranger"])
async def test_cancel_is_answered_once(hub: RunningHub, follows: bool) -> None:
    async with (
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as owner,
        ws_connect(f"{hub.ws_url}/ws/client/c2?token={CLIENT_TOKEN}") as other,
    ):
        await connected(owner)
        await connected(other)
        await send(owner, type="submit_job", job_type="comfyui", payload={}, message_id="k-1")
        assert (await recv_json(owner))["type"] == "job_accepted"
        canceller = owner if follows else other
        await send(canceller, type="cancel_job", job_id="k-1", reason="not needed")
        # A fence for relays: a job this socket follows, cancelled after k-1; its relay
        # comes after anything about k-1 in the event stream.
        await send(canceller, type="submit_job", job_type="comfyui", payload={}, message_id="k-2")
        _, before = await recv_until(
            canceller, lambda m: m["type"] == "job_accepted" and m["job_id"] == "k-2"
        )
        async with hub.client() as http:
            response = await http.post(
                "/jobs/k-2/cancel", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            )
        assert response.status_code == 200, response.text
        _, seen = await recv_until(
            canceller, lambda m: m["type"] == "response_job_status" and m["job_id"] == "k-2"
        )
        cancelled = [m for m in before + seen if m["type"] == "response_job_status"]
        assert len(cancelled) == 1, seen
        assert cancelled[0]["job_id"] == "k-1"
        assert cancelled[0]["status"] == "cancelled"
        assert cancelled[0]["message"] == "not needed"


# -- items 3 and 4: stats_broadcast as the original page reads it, when things change


@pytest.fixture
async def slow_stats_hub(
    redis_url: str, broker_settings: BrokerSettings
) -> AsyncIterator[RunningHub]:
    """A hub whose regular broadcast never comes during a test: any broadcast after the
    first was sent because something changed."""
    from tests.hub_support import hub_settings

    settings = hub_settings(
        redis_url, broker_settings, stats_interval=3600, stats_change_interval=0.05
    )
    async with running_hub(settings) as h:
        yield h


async def test_stats_broadcast_follows_changes_with_capabilities_in_the_original_place(
    slow_stats_hub: RunningHub, broker: Broker
) -> None:
    hub = slow_stats_hub
    async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as monitor:
        await connected(monitor)
        first = await recv_json(monitor)
        assert first["type"] == "stats_broadcast"
        assert first["workers"] == {}
        await start_worker(broker, "w1")
        stats, _ = await recv_until(
            monitor, lambda m: m["type"] == "stats_broadcast" and "w1" in m["workers"]
        )
        # The page reads workers[id].capabilities.supported_job_types (a list of job
        # types) for its worker cards and its job-type menu.
        worker = stats["workers"]["w1"]
        assert worker["capabilities"]["supported_job_types"] == ["comfyui"]
        assert worker["supported_job_types"] == ["comfyui"]
        assert worker["connection_status"] == "connected"
        assert worker["is_accepting_jobs"] is True
        async with hub.client() as http:
            response = await http.post(
                "/jobs",
                json={"service_type": "comfyui"},
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
            )
        assert response.status_code == 201, response.text
        stats, seen = await recv_until(
            monitor,
            lambda m: m["type"] == "stats_broadcast" and m["system"]["queues"]["total"] == 1,
        )
        # The original sent no ack that the page uses after a broadcast; none is sent.
        assert all(m["type"] != "ack" for m in seen)


# -- item 1: the shared token, as a migration setting


@pytest.fixture
async def shared_token_hub(
    redis_url: str, broker_settings: BrokerSettings
) -> AsyncIterator[RunningHub]:
    from tests.hub_support import hub_settings

    settings = hub_settings(redis_url, broker_settings, legacy_shared_token=True)
    async with running_hub(settings) as h:
        yield h


async def test_shared_token_is_refused_for_monitors_by_default(hub: RunningHub) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={CLIENT_TOKEN}") as monitor:
        refused = await recv_json(monitor)
        assert refused == {
            "type": "error",
            "error": "Authentication failed: not allowed (monitors need the operator token)",
        }
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="request_stats", message_id="q1")
        assert (await recv_json(client))["error"] == "request_stats needs the operator token"


async def test_migration_setting_lets_the_shared_token_do_what_the_original_allowed(
    shared_token_hub: RunningHub, broker: Broker
) -> None:
    hub = shared_token_hub
    async with (
        ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={CLIENT_TOKEN}") as monitor,
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client,
    ):
        await connected(monitor)
        stats, _ = await recv_until(monitor, lambda m: m["type"] == "stats_broadcast")
        assert set(stats) >= {"connections", "workers", "subscriptions", "system"}
        await start_worker(broker, "w1")
        status, _ = await recv_until(monitor, lambda m: m["type"] == "worker_status")
        assert (status["worker_id"], status["status"]) == ("w1", "idle")

        await connected(client)
        await send(client, type="request_stats", message_id="q1")
        response = await recv_json(client)
        assert response["type"] == "response_stats"
        assert set(response["stats"]) == {"queues", "jobs", "workers"}
        ack = await recv_json(client)
        assert (ack["type"], ack["original_id"], ack["original_type"]) == (
            "ack", "q1", "request_stats"
        )  # fmt: skip

        await send(client, type="submit_job", job_type="comfyui", payload={}, message_id="f-1")
        assert (await recv_json(client))["type"] == "job_accepted"
        caps = await start_worker(broker, "w2")
        got = await claim(broker, "w2", caps)
        await broker.fail("w2", got.job.id, got.token, "boom", retryable=False)
        await recv_until(client, lambda m: m["type"] == "fail_job")
        await send(client, type="force_retry_job", job_id="f-1")
        retried, _ = await recv_until(client, lambda m: m.get("message") == "retry requested")
        assert (retried["type"], retried["job_id"], retried["status"]) == (
            "response_job_status", "f-1", "pending"
        )  # fmt: skip


async def test_customer_bound_tokens_never_act_as_the_shared_token(
    shared_token_hub: RunningHub,
) -> None:
    url = f"{shared_token_hub.ws_url}/ws/monitor/m1?token={ACME_TOKEN}"
    async with ws_connect(url) as monitor:
        refused = await recv_json(monitor)
        assert refused["error"].startswith("Authentication failed: not allowed")


async def test_migration_setting_is_off_by_default_and_warned_about_when_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from hub.settings import HubSettings
    from tests.hub_support import hub_client, hub_settings

    token = {"HUB_AUTH_TOKEN": "a-client-token"}
    assert HubSettings.from_env(token).legacy_shared_token is False
    on = HubSettings.from_env(token | {"HUB_LEGACY_SHARED_TOKEN": "true"})
    assert on.legacy_shared_token is True
    caplog.set_level(logging.WARNING, logger="hub")
    async with hub_client(hub_settings(redis_url, legacy_shared_token=True)):
        pass
    assert any("HUB_LEGACY_SHARED_TOKEN is on" in r.getMessage() for r in caplog.records)


# -- item 9: the original's 0-10 priorities on the broker's 0-100 scale


@pytest.mark.parametrize(("legacy", "stored"), [(0, 0), (5, 50), (10, 100)])
async def test_legacy_priorities_are_scaled_onto_the_rest_scale(
    hub: RunningHub, broker: Broker, legacy: int, stored: int
) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="comfyui", payload={},
                   priority=legacy, message_id="p-1")  # fmt: skip
        assert (await recv_json(client))["type"] == "job_accepted"
    job = await broker.get("p-1")
    assert job is not None
    assert job.priority == stored


async def test_an_emergency_legacy_job_ranks_above_default_rest_jobs(
    hub: RunningHub, broker: Broker
) -> None:
    async with hub.client() as http:
        response = await http.post(
            "/jobs",
            json={"service_type": "comfyui", "id": "rest-default"},
            headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        )
        assert response.status_code == 201, response.text
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="comfyui", payload={}, priority=10,
                   message_id="emergency")  # fmt: skip
        accepted = await recv_json(client)
        assert (accepted["job_id"], accepted["position"]) == ("emergency", 1)
        await send(client, type="submit_job", job_type="comfyui", payload={}, message_id="plain")
        assert (await recv_json(client))["position"] == 3  # absent: the REST default, 50
    caps = await start_worker(broker, "w1")
    assert (await claim(broker, "w1", caps)).job.id == "emergency"


@pytest.mark.parametrize("priority", [11, -1, 2.5, "5", True])
async def test_priorities_off_the_original_scale_are_refused_naming_the_field(
    hub: RunningHub, broker: Broker, priority: Any
) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="comfyui", payload={},
                   priority=priority, message_id="bad-p")  # fmt: skip
        refused = await recv_json(client)
        assert refused["type"] == "error"
        assert refused["details"] == {"field": "priority"}
        assert "0 to 10" in refused["error"]
    assert await broker.get("bad-p") is None


# -- item 10: job_accepted.position counts the pending jobs of the same job type


async def test_position_is_one_based_among_pending_jobs_of_the_same_type(
    hub: RunningHub,
) -> None:
    async with hub.client() as http:
        for n, service in enumerate(["a1111", "a1111", "comfyui"]):
            response = await http.post(
                "/jobs",
                json={"service_type": service, "id": f"other-{n}"},
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
            )
            assert response.status_code == 201, response.text
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        positions = []
        for message_id, job_type in [("c-1", "comfyui"), ("s-1", "simulation"), ("c-2", "comfyui")]:
            await send(client, type="submit_job", job_type=job_type, payload={},
                       message_id=message_id)  # fmt: skip
            accepted = await recv_json(client)
            assert accepted["type"] == "job_accepted"
            positions.append((accepted["job_id"], accepted["position"]))
        # Each behind the pending jobs of its own type only (two a1111 jobs are not).
        assert positions == [("c-1", 2), ("s-1", 1), ("c-2", 3)]


# -- item 7: message_id is the job id, whatever string the original accepted


@pytest.mark.parametrize(
    "message_id", ["my job 1", "a/b?c#d", "üñï 画像", "esc.looks-escaped", "acme~x!y", "m-1"]
)
async def test_any_message_id_is_the_job_id_on_every_legacy_frame(
    hub: RunningHub, broker: Broker, redis: Any, message_id: str
) -> None:
    async with (
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client,
        ws_connect(f"{hub.ws_url}/ws/client/c2?token={CLIENT_TOKEN}") as other,
        ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={OPERATOR_TOKEN}") as monitor,
    ):
        for ws in (client, other, monitor):
            await connected(ws)
        await send(client, type="submit_job", job_type="comfyui", payload={},
                   message_id=message_id)  # fmt: skip
        accepted = await recv_json(client)
        assert accepted["type"] == "job_accepted"
        assert accepted["job_id"] == message_id
        # Others name it by the same id: status, subscription.
        await send(other, type="request_job_status", job_id=message_id)
        status = await recv_json(other)
        assert (status["type"], status["job_id"], status["status"]) == (
            "response_job_status", message_id, "pending"
        )  # fmt: skip
        stats, _ = await recv_until(
            monitor,
            lambda m: m["type"] == "stats_broadcast" and m["system"]["jobs"]["active_jobs"],
        )
        assert [j["id"] for j in stats["system"]["jobs"]["active_jobs"]] == [message_id]
        caps = await start_worker(broker, "w1")
        got = await claim(broker, "w1", caps)
        await broker.complete("w1", got.job.id, got.token, {"ok": True})
        for ws in (client, other, monitor):
            done, _ = await recv_until(ws, lambda m: m["type"] == "complete_job")
            assert done["job_id"] == message_id
    # Stored under a key with nothing a key, URL or lease record cannot hold.
    assert all(b" " not in k and b"/" not in k for k in await redis.keys("*"))


@pytest.mark.parametrize(
    ("message_id", "problem"), [(12, "must be a string"), ("é" * 50, "too long")]
)
async def test_message_ids_it_cannot_keep_are_refused_naming_the_field(
    hub: RunningHub, redis: Any, message_id: Any, problem: str
) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="comfyui", payload={},
                   message_id=message_id)  # fmt: skip
        refused = await recv_json(client)
        assert refused["type"] == "error"
        assert refused["details"] == {"field": "message_id"}
        assert problem in refused["error"]
    assert not await redis.keys("*job:*")


# -- item 12: the original REST routes


async def test_rest_submit_and_status_as_the_original_served_them(
    hub: RunningHub, broker: Broker
) -> None:
    async with hub.client() as http:
        # No token: refused in the original's (FastAPI's) error shape.
        refused = await http.post("/api/jobs", json={"job_type": "comfyui", "payload": {}})
        assert refused.status_code == 401
        assert set(refused.json()) == {"detail"}
        # The token in the query string, as on the legacy sockets.
        response = await http.post(
            f"/api/jobs?token={CLIENT_TOKEN}",
            json={"job_type": "comfyui", "payload": {"p": 1}, "priority": 10,
                  "job_id": "my rest job"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json() == {
            "success": True,
            "job_id": "my rest job",
            "message": "Job submitted successfully with ID: my rest job",
        }
        generated = await http.post(
            "/api/jobs",
            json={"job_type": "comfyui", "payload": {}},
            headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        )
        assert generated.status_code == 200, generated.text
        assert generated.json()["job_id"].startswith("job-rest-")

        status = await http.get(f"/api/jobs/my%20rest%20job?token={CLIENT_TOKEN}")
        assert status.status_code == 200, status.text
        body = status.json()
        # JobStatusResponse, field by field.
        assert set(body) == {
            "job_id", "status", "job_type", "client_id", "worker_id", "created_at",
            "claimed_at", "completed_at", "position", "display_position", "progress",
            "result", "error", "position_description", "payload", "failures",
        }  # fmt: skip
        assert body["job_id"] == "my rest job"
        assert body["status"] == "pending"
        assert body["job_type"] == "comfyui"
        assert body["client_id"] == "rest-api-client"
        assert body["worker_id"] is None
        assert isinstance(body["created_at"], str)
        assert float(body["created_at"]) > 0
        assert (body["claimed_at"], body["completed_at"]) == (None, None)
        # Priority 10 (100 on the new scale) outranks the default job behind it.
        assert (body["position"], body["display_position"]) == (0, 1)
        assert body["position_description"] == "Next in queue"
        assert body["progress"] == 0.0
        assert (body["result"], body["error"]) == (None, None)
        assert body["payload"] == {"p": 1}
        assert body["failures"] == 0

        missing = await http.get(f"/api/jobs/nope?token={CLIENT_TOKEN}")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Job with ID nope not found"}
        bad = await http.post(
            f"/api/jobs?token={CLIENT_TOKEN}", json={"job_type": "comfyui", "payload": "x"}
        )
        assert bad.status_code == 422
        assert bad.json()["field"] == "payload"


async def test_rest_submit_can_wait_for_the_result(hub: RunningHub, broker: Broker) -> None:
    async def run() -> None:
        caps = await start_worker(broker, "w1")
        # A condition with a deadline: the job exists once the request below submitted it.
        await wait_until(lambda: broker.get("sync-1"))
        got = await claim(broker, "w1", caps)
        await broker.complete("w1", got.job.id, got.token, {"images": ["a.png"]})

    worker = asyncio.create_task(run())
    async with hub.client() as http:
        response = await http.post(
            f"/api/jobs?token={CLIENT_TOKEN}",
            json={"job_type": "comfyui", "payload": {}, "job_id": "sync-1", "wait": True,
                  "timeout": 30},
        )  # fmt: skip
    await worker
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["job_id"], body["status"], body["worker_id"]) == ("sync-1", "completed", "w1")
    assert body["result"] == {"images": ["a.png"]}
    assert body["error"] is None
    assert isinstance(body["completed_at"], str)


async def test_rest_wait_that_runs_out_says_so_as_the_original_did(hub: RunningHub) -> None:
    async with hub.client() as http:
        response = await http.post(
            f"/api/jobs?token={CLIENT_TOKEN}",
            json={"job_type": "comfyui", "payload": {}, "job_id": "slow-1", "wait": True,
                  "timeout": 0},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["job_id"], body["status"]) == ("slow-1", "pending")
    assert body["error"] == "Timeout: Job did not complete within 0 seconds"


# -- item 8: job types are case-insensitive, kept in lower case


async def test_job_types_match_workers_whatever_their_case(hub: RunningHub, broker: Broker) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="ComfyUI", payload={}, message_id="ci-1")
        accepted = await recv_json(client)
        assert (accepted["type"], accepted["job_id"]) == ("job_accepted", "ci-1")
    async with hub.client() as http:
        response = await http.post(
            "/jobs",
            json={"service_type": "COMFYUI", "id": "ci-2"},
            headers={"Authorization": f"Bearer {CLIENT_TOKEN}"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["service_type"] == "comfyui"
        listed = await http.get(
            "/jobs?service_type=ComfyUI", headers={"Authorization": f"Bearer {CLIENT_TOKEN}"}
        )
        assert listed.status_code == 200, listed.text
        assert sorted(j["id"] for j in listed.json()["jobs"]) == ["ci-1", "ci-2"]
    for job_id in ("ci-1", "ci-2"):
        job = await broker.get(job_id)
        assert job is not None
        assert job.service_type == "comfyui"
    # A worker that names its service in another case serves the same jobs.
    caps = capabilities(services=["ComfyUI"])
    assert caps.services == ["comfyui"]
    await start_worker(broker, "w1", caps)
    assert {(await claim(broker, "w1", caps)).job.id for _ in range(2)} == {"ci-1", "ci-2"}
    async with hub.client() as http:
        listed = await http.get("/workers", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert listed.status_code == 200, listed.text
    assert [w["capabilities"]["services"] for w in listed.json()["workers"]] == [["comfyui"]]


async def test_a_job_type_no_worker_could_name_is_refused_naming_job_type(
    hub: RunningHub, redis: Any
) -> None:
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as client:
        await connected(client)
        await send(client, type="submit_job", job_type="Comfy UI", payload={}, message_id="x-1")
        refused = await recv_json(client)
        assert refused["type"] == "error"
        assert refused["details"] == {"field": "job_type"}
    assert not await redis.keys("*job:*")
