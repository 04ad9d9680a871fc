"""The jobs REST API against a real Redis: submit, read, list, long-poll, cancel, retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import (
    ACME,
    CLIENT,
    OPERATOR,
    capabilities,
    claim,
    hub_client,
    hub_of_client,
    hub_settings,
    start_worker,
)


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


async def submit(
    api: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: object
) -> dict[str, Any]:
    body.setdefault("service_type", "comfyui")
    response = await api.post("/jobs", json=body, headers=headers or CLIENT)
    assert response.status_code == 201, response.text
    created = response.json()
    assert isinstance(created, dict), created
    return created


async def test_submit_returns_201_with_id_status_priority_and_position(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/jobs",
        json={"service_type": "comfyui", "customer_id": "c1", "priority": 70, "payload": {"x": 1}},
        headers=CLIENT,
    )
    assert response.status_code == 201
    job = response.json()
    assert job["id"].startswith("job-")
    assert job["status"] == "pending"
    assert job["priority"] == 70
    assert job["effective_priority"] == 70
    assert job["queue_position"] == 0
    assert "payload" not in job  # not echoed back
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    "body",
    [
        {"service_type": "comfyui"},
        {
            "service_type": "a1111",
            "customer_id": "acme",
            "priority": 7,
            "max_retries": 5,
            "timeout_seconds": 12.3456,
            "deadline": "2031-05-01T10:00:00+02:00",
            "tags": ["x", "y"],
            "requirements": {"hardware": {"gpu": {"memory_gb": 40}}, "models": ["m1"]},
        },
    ],
)
async def test_submit_answer_matches_what_get_shows(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    created = (await api.post("/jobs", json=body, headers=CLIENT)).json()
    shown = (await api.get(f"/jobs/{created['id']}", headers=CLIENT)).json()
    for key in ("payload", "result", "waiting"):
        shown.pop(key)
    assert created == shown


async def test_default_priority_comes_from_settings(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    async with hub_client(hub_settings(redis_url, broker_settings, default_priority=42)) as api:
        job = await submit(api)
    assert job["priority"] == 42


async def test_same_id_returns_the_same_job_with_200(api: httpx.AsyncClient) -> None:
    first = await submit(api, id="order-17", priority=10)
    again = await api.post(
        "/jobs", json={"service_type": "comfyui", "id": "order-17", "priority": 99}, headers=CLIENT
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] == "order-17"
    assert again.json()["priority"] == 10  # the original, untouched


async def test_idempotency_key_returns_the_original_job(api: httpx.AsyncClient) -> None:
    headers = {**CLIENT, "Idempotency-Key": "abc-123"}
    one = await api.post("/jobs", json={"service_type": "comfyui"}, headers=headers)
    two = await api.post("/jobs", json={"service_type": "comfyui"}, headers=headers)
    assert (one.status_code, two.status_code) == (201, 200)
    assert one.json()["id"] == two.json()["id"]
    other = await api.post(
        "/jobs", json={"service_type": "comfyui"}, headers={**CLIENT, "Idempotency-Key": "xyz"}
    )
    assert other.status_code == 201
    assert other.json()["id"] != one.json()["id"]


async def test_idempotency_keys_are_scoped_by_customer(api: httpx.AsyncClient) -> None:
    a = await api.post(
        "/jobs",
        json={"service_type": "comfyui", "customer_id": "a"},
        headers={**CLIENT, "Idempotency-Key": "k"},
    )
    b = await api.post(
        "/jobs",
        json={"service_type": "comfyui", "customer_id": "b"},
        headers={**CLIENT, "Idempotency-Key": "k"},
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_customer_token_submits_and_reads_only_its_customer(api: httpx.AsyncClient) -> None:
    mine = await submit(api, ACME)
    assert mine["customer_id"] == "acme"
    other = await submit(api, CLIENT, customer_id="globex")
    refused = await api.post(
        "/jobs", json={"service_type": "comfyui", "customer_id": "globex"}, headers=ACME
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["field"] == "customer_id"
    assert (await api.get(f"/jobs/{other['id']}", headers=ACME)).status_code == 404
    assert (await api.get(f"/jobs/{mine['id']}", headers=ACME)).status_code == 200
    listed = (await api.get("/jobs", headers=ACME)).json()["jobs"]
    assert [j["id"] for j in listed] == [mine["id"]]
    assert (await api.get("/jobs?customer_id=globex", headers=ACME)).status_code == 403
    assert (await api.post(f"/jobs/{other['id']}/cancel", headers=ACME)).status_code == 404
    taken = await api.post(
        "/jobs", json={"service_type": "comfyui", "id": other["id"]}, headers=ACME
    )
    assert taken.status_code == 201  # acme's ids are its own: nothing about globex's leaks
    assert taken.json()["id"] == f"acme~{other['id']}"
    strict = await api.post(
        "/jobs",
        json={"service_type": "comfyui", "requirements": {"customer_isolation": "strict"}},
        headers=ACME,
    )
    assert strict.status_code == 201  # the token supplies the customer
    assert strict.json()["customer_id"] == "acme"
    batch = await api.post("/jobs/batch", json={"jobs": [{"service_type": "x"}]}, headers=ACME)
    assert batch.json()["jobs"][0]["customer_id"] == "acme"
    bad = await api.post("/jobs", content=b"{nope", headers=ACME)
    assert bad.json()["error"]["field"] == "body"


async def test_get_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/jobs/job-nope", headers=CLIENT)
    assert response.status_code == 404
    assert response.json() == {"error": {"field": "id", "message": "no such job"}}


async def test_queue_position_follows_priority_then_fifo(api: httpx.AsyncClient) -> None:
    low = await submit(api, priority=10)
    mid = await submit(api, priority=50)
    mid2 = await submit(api, priority=50)
    high = await submit(api, priority=90)
    positions = {
        j["id"]: (await api.get(f"/jobs/{j['id']}", headers=CLIENT)).json()["queue_position"]
        for j in (low, mid, mid2, high)
    }
    assert positions == {high["id"]: 0, mid["id"]: 1, mid2["id"]: 2, low["id"]: 3}


async def test_why_it_waits(api: httpx.AsyncClient, broker: Broker) -> None:
    big = await submit(api, requirements={"hardware": {"gpu": {"memory_gb": 80}}})

    async def waiting(job_id: str) -> dict[str, Any]:
        body = (await api.get(f"/jobs/{job_id}", headers=CLIENT)).json()
        assert body["status"] == "pending"
        why = body["waiting"]
        assert isinstance(why, dict), why
        return why

    assert (await waiting(big["id"]))["reason"] == "no_workers"
    await start_worker(broker, "w-a1111", capabilities(services=["a1111"]))
    w = await waiting(big["id"])
    assert w["reason"] == "no_capable_worker"
    assert w["message"] == "no worker offers service 'comfyui'"

    small = await start_worker(broker, "w-small", capabilities(gpu_gb=[24]))
    w = await waiting(big["id"])
    assert w["reason"] == "no_capable_worker"
    assert "service 'comfyui'" in w["message"]
    assert ">= 80 GB" in w["message"]

    fits = await start_worker(broker, "w-big", capabilities(gpu_gb=[141]))
    w = await waiting(big["id"])
    assert w["reason"] == "queued"
    assert w["workers"]["capable"] == 1

    # The only capable worker gets busy with another job that only it can take.
    first = await submit(api, priority=100, requirements={"hardware": {"gpu": {"memory_gb": 100}}})
    got = await claim(broker, "w-big", fits)
    assert got.job.id == first["id"]
    await broker.heartbeat("w-big", status="busy", running={got.job.id: got.token})
    w = await waiting(big["id"])
    assert w["reason"] == "workers_busy"
    assert w["message"] == "1 capable worker(s), all busy"
    assert w["workers"]["busy"] == 1
    del small


async def test_paused_capable_workers_are_reported(api: httpx.AsyncClient, broker: Broker) -> None:
    job = await submit(api)
    await start_worker(broker, "w1")
    await broker.set_worker_state("w1", "paused")
    body = (await api.get(f"/jobs/{job['id']}", headers=CLIENT)).json()
    assert body["waiting"]["reason"] == "workers_paused"


async def test_list_filters_and_cursor(api: httpx.AsyncClient, broker: Broker) -> None:
    ids = [(await submit(api, customer_id="c1"))["id"] for _ in range(5)]
    other = await submit(api, service_type="a1111", customer_id="c2")
    caps = await start_worker(broker, "w1")
    active = await claim(broker, "w1", caps)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": "2", "service_type": "comfyui"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/jobs", params=params, headers=CLIENT)).json()
        seen += [j["id"] for j in page["jobs"]]
        assert len(page["jobs"]) <= 2
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))

    pending = (await api.get("/jobs?status=pending", headers=CLIENT)).json()["jobs"]
    assert {j["id"] for j in pending} == (set(ids) - {active.job.id}) | {other["id"]}
    running = (await api.get("/jobs?status=active", headers=CLIENT)).json()["jobs"]
    assert [j["id"] for j in running] == [active.job.id]
    by_customer = (await api.get("/jobs?customer_id=c2", headers=CLIENT)).json()["jobs"]
    assert [j["id"] for j in by_customer] == [other["id"]]
    assert all("payload" not in j for j in pending)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("cursor=!!!", "cursor"),
        ("cursor=WzEsMl0x", "cursor"),
        ("service_type=Bad%20Name", "service_type"),
        ("colour=red", "colour"),
    ],
)
async def test_list_rejects_bad_parameters(api: httpx.AsyncClient, query: str, field: str) -> None:
    response = await api.get(f"/jobs?{query}", headers=CLIENT)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


async def test_cancel_pending_and_active(api: httpx.AsyncClient, broker: Broker) -> None:
    pending = await submit(api)
    response = await api.post(
        f"/jobs/{pending['id']}/cancel", json={"reason": "changed my mind"}, headers=CLIENT
    )
    assert response.status_code == 200
    body = response.json()
    assert body["was"] == "pending"
    assert body["job"]["status"] == "cancelled"
    assert body["job"]["message"] == "changed my mind"
    again = await api.post(f"/jobs/{pending['id']}/cancel", headers=CLIENT)
    assert again.status_code == 409
    assert again.json()["error"]["field"] == "status"

    running = await submit(api)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    assert got.job.id == running["id"]
    response = await api.post(f"/jobs/{running['id']}/cancel", headers=CLIENT)
    assert response.status_code == 200
    assert response.json()["was"] == "active"
    # The worker is fenced off: its late result is refused.
    assert await broker.complete("w1", got.job.id, got.token, {"late": True}) == "cancelled"
    assert (await api.post("/jobs/job-missing/cancel", headers=CLIENT)).status_code == 404


async def test_retry_failed_job(api: httpx.AsyncClient, broker: Broker) -> None:
    job = await submit(api, max_retries=0)
    assert (await api.post(f"/jobs/{job['id']}/retry", headers=OPERATOR)).status_code == 409
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    assert await broker.fail("w1", got.job.id, got.token, "boom") == "failed"
    failed = (await api.get(f"/jobs/{job['id']}", headers=CLIENT)).json()
    assert failed["status"] == "failed"
    assert failed["error"] == "boom"
    assert (await api.post(f"/jobs/{job['id']}/retry", headers=CLIENT)).status_code == 403
    response = await api.post(f"/jobs/{job['id']}/retry", headers=OPERATOR)
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert response.json()["attempts"] == 0
    assert (await api.post("/jobs/job-missing/retry", headers=OPERATOR)).status_code == 404


async def test_a_job_rejected_on_its_first_run_shows_one_attempt(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    """A non-retryable failure (ComfyUI's HTTP 400) ran once: GET /jobs/{id} says so, with
    the default max_retries, instead of reporting the retries it never used."""
    job = await submit(api)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    rejected = "ComfyUI rejected the workflow (HTTP 400)"
    assert await broker.fail("w1", got.job.id, got.token, rejected, retryable=False) == "failed"
    failed = (await api.get(f"/jobs/{job['id']}", headers=CLIENT)).json()
    assert (failed["status"], failed["attempts"], failed["max_retries"]) == ("failed", 1, 3)


async def test_long_poll_returns_when_the_job_finishes(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    job = await submit(api)
    caps = await start_worker(broker, "w1")

    async def work() -> None:
        got = await claim(broker, "w1", caps)
        await broker.progress("w1", got.job.id, got.token, 50, "half")
        await broker.complete("w1", got.job.id, got.token, {"images": ["a.png"]})

    # The longest wait the hub allows (HUB_MAX_WAIT_SECONDS, 60 s): a poll that ignored the
    # job's events and answered only when its wait ran out would take a minute.
    poll = asyncio.create_task(api.get(f"/jobs/{job['id']}?wait=60", headers=CLIENT))
    hub = hub_of_client(api)
    await wait_until(lambda: hub.events.subscriber_count == 1, message="long-poll subscribed")
    await work()
    # The completion itself must end the poll. A correct hub answers within milliseconds of
    # the `completed` event; 30 s is thousands of times that, so a loaded 2-core box cannot
    # reach it, yet half the wait, so an answer that came from the wait running out cannot
    # pass either.
    response = await asyncio.wait_for(poll, 30)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"] == {"images": ["a.png"]}


async def test_long_poll_times_out_with_the_current_state(api: httpx.AsyncClient) -> None:
    job = await submit(api)
    response = await api.get(f"/jobs/{job['id']}?wait=0.3", headers=CLIENT)
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    for bad in ("x", "-1", "100000"):
        response = await api.get(f"/jobs/{job['id']}?wait={bad}", headers=CLIENT)
        assert response.status_code == 400
        assert response.json()["error"]["field"] == "wait"


async def test_batch_submit(api: httpx.AsyncClient, redis: Redis) -> None:
    response = await api.post(
        "/jobs/batch",
        json={"jobs": [{"service_type": "comfyui"}, {"service_type": "a1111", "id": "b-1"}]},
        headers=CLIENT,
    )
    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert [j["created"] for j in jobs] == [True, True]
    assert jobs[1]["id"] == "b-1"
    again = await api.post(
        "/jobs/batch", json={"jobs": [{"service_type": "a1111", "id": "b-1"}]}, headers=CLIENT
    )
    assert again.status_code == 200
    assert again.json()["jobs"][0]["created"] is False

    before = await redis.dbsize()
    bad = await api.post(
        "/jobs/batch",
        json={"jobs": [{"service_type": "comfyui"}, {"service_type": "comfyui", "priority": 500}]},
        headers=CLIENT,
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "jobs[1].priority"
    assert await redis.dbsize() == before
    empty = await api.post("/jobs/batch", json={"jobs": []}, headers=CLIENT)
    assert empty.status_code == 400
