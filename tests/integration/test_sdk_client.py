"""The SDK against a real hub, a real worker (simulation connector) and a real Redis:
submit, wait, run, cancel, retry, list, the fleet, and the errors a caller sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from emp import (
    BadRequest,
    Client,
    Conflict,
    Forbidden,
    JobFailed,
    JobRequest,
    JobStatus,
    NotFound,
    Unauthorized,
    WaitTimeout,
)
from shared.settings import BrokerSettings
from tests.sdk_support import (
    ACME_TOKEN,
    LONG,
    OPERATOR_TOKEN,
    QUICK,
    Recording,
    RunningHub,
    client,
    hub_with_worker,
    sim,
    until_running,
)


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    async with hub_with_worker(redis_url, broker_settings) as running:
        yield running


async def test_run_submits_waits_and_returns_the_finished_job(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        job = await emp.run("simulation", sim(result={"answer": 42}), timeout=30)
    assert job.status is JobStatus.COMPLETED
    assert job.succeeded
    assert job.result == {"steps": 3, "result": {"answer": 42}, "worker_service": "simulation"}
    assert job.worker_id == "w1"
    assert job.progress == 100
    assert job.finished_at is not None
    assert job.created_at is not None
    assert job.finished_at >= job.created_at


async def test_submit_returns_a_handle_to_wait_on_and_read(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        handle = await emp.submit(
            "simulation", sim(), priority=70, tags=["sdk"], customer_id="acme", max_retries=1
        )
        assert handle.created
        assert handle.status is JobStatus.PENDING
        assert handle.job.effective_priority == 70
        finished = await handle.wait(timeout=30)
        read = await emp.get(handle.id)
    assert finished.status is JobStatus.COMPLETED
    assert handle.job == finished  # the handle keeps the last state it saw
    assert read.payload == sim()
    assert read.tags == ["sdk"]
    assert read.customer_id == "acme"
    assert read.max_retries == 1


async def test_a_failed_job_raises_job_failed_from_run(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        with pytest.raises(JobFailed) as failed:
            await emp.run("simulation", sim(fail="out of memory"), max_retries=0, timeout=30)
    assert failed.value.job.status is JobStatus.FAILED
    assert failed.value.job.error is not None
    assert "out of memory" in failed.value.job.error


async def test_wait_gives_up_after_its_timeout_with_the_last_state(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        handle = await emp.submit("simulation", LONG)
        with pytest.raises(WaitTimeout) as timed_out:
            await emp.wait(handle.id, timeout=0)
        await handle.cancel()
    assert timed_out.value.job is not None
    assert timed_out.value.job.id == handle.id
    assert timed_out.value.job.status in (JobStatus.PENDING, JobStatus.ACTIVE)


async def test_wait_adopts_a_hub_limit_below_its_long_poll(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    recording = Recording()
    async with (
        hub_with_worker(redis_url, broker_settings, max_wait_seconds=1) as hub,
        client(hub.url, transport=recording) as emp,
    ):
        handle = await emp.submit("simulation", sim(steps=5, step_ms=300))
        job = await handle.wait(timeout=60)
    assert job.status is JobStatus.COMPLETED
    waits = [r.url.params.get("wait") for r in recording.sent("GET", f"/jobs/{handle.id}")]
    assert waits[0] == "25"  # refused: over this hub's limit of 1 s
    assert set(waits[1:]) == {"1"}


async def test_cancel_stops_a_running_job_and_a_second_cancel_conflicts(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        handle = await emp.submit("simulation", LONG)
        await until_running(emp, handle.id)
        cancelled = await handle.cancel("changed my mind")
        with pytest.raises(Conflict) as again:
            await emp.cancel(handle.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert again.value.status == 409
    assert again.value.field == "status"


async def test_operators_retry_failed_jobs_and_clients_may_not(hub: RunningHub) -> None:
    async with client(hub.url) as emp, client(hub.url, OPERATOR_TOKEN) as operator:
        handle = await emp.submit("simulation", sim(fail="flaky"), max_retries=0)
        first = await handle.wait(timeout=30)
        with pytest.raises(Forbidden):
            await emp.retry(handle.id)
        await operator.retry(handle.id)
        second = await operator.wait(handle.id, timeout=30)
    assert first.status is second.status is JobStatus.FAILED
    assert first.finished_at is not None
    assert second.finished_at is not None
    assert second.finished_at > first.finished_at  # it ran again


async def test_errors_carry_the_hubs_field_message_and_status(hub: RunningHub) -> None:
    async with client(hub.url) as emp, client(hub.url, "not-a-token") as stranger:
        with pytest.raises(BadRequest) as bad_priority:
            await emp.submit("simulation", sim(), priority=101)
        with pytest.raises(BadRequest) as typo:
            await emp.submit("simulation", requirements={"hardware": {"gpu": {"memry_gb": 8}}})
        with pytest.raises(NotFound) as missing:
            await emp.get("no-such-job")
        with pytest.raises(Unauthorized) as refused:
            await stranger.get("no-such-job")
    assert (bad_priority.value.status, bad_priority.value.field) == (400, "priority")
    assert typo.value.field.startswith("requirements.hardware.gpu")
    assert (missing.value.status, missing.value.field) == (404, "id")
    assert refused.value.status == 401
    assert refused.value.message == "invalid token"


async def test_submissions_with_one_idempotency_key_make_one_job(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        first = await emp.submit("simulation", sim(), idempotency_key="order-17")
        second = await emp.submit("simulation", sim(), idempotency_key="order-17")
        third = await emp.submit("simulation", sim())  # a fresh key: a new job
    assert (first.created, second.created, third.created) == (True, False, True)
    assert first.id == second.id != third.id


async def test_submit_many_queues_every_job_and_can_be_sent_again(hub: RunningHub) -> None:
    requests = [JobRequest(service_type="simulation", payload=sim(result=i)) for i in range(3)]
    async with client(hub.url) as emp:
        handles = await emp.submit_many(requests)
        assert all(h.created for h in handles)
        again = await emp.submit_many(
            [JobRequest(service_type="simulation", id=h.id) for h in handles]
        )
        results = [(await h.wait(timeout=30)).result for h in handles]
    assert [h.id for h in again] == [h.id for h in handles]
    assert not any(h.created for h in again)
    assert [r["result"] for r in results] == [0, 1, 2]


async def test_jobs_pages_through_every_matching_job_in_queue_order(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    recording = Recording()
    async with (
        hub_with_worker(redis_url, broker_settings, worker=False) as hub,
        client(hub.url, transport=recording) as emp,
    ):
        ids = [(await emp.submit("nobody-runs-this", {"n": i})).id for i in range(7)]
        await emp.submit("other-service", {})
        listed = [j async for j in emp.jobs(service_type="nobody-runs-this", page_size=3)]
        pages = len(recording.sent("GET", "/jobs"))
        first_five = [j.id async for j in emp.jobs(status="pending", limit=5)]
    assert [j.id for j in listed] == ids
    assert all(j.status is JobStatus.PENDING and j.payload is None for j in listed)
    assert pages >= 3  # seven jobs, three a page
    assert first_five == ids[:5]


async def test_operators_see_the_workers_and_the_statistics(hub: RunningHub) -> None:
    async with client(hub.url, OPERATOR_TOKEN) as operator, client(hub.url, ACME_TOKEN) as acme:
        await operator.run("simulation", sim(), timeout=30)
        workers = await operator.workers()
        stats = await operator.stats()
        with pytest.raises(Forbidden):
            await acme.workers()
    (w1,) = workers
    assert w1.id == "w1"
    assert w1.alive
    assert "simulation" in w1.services
    assert stats.workers == 1
    assert stats.jobs["completed"] >= 1
    assert stats.throughput["1m"]["completed"] >= 1
    assert stats.run_ms.samples >= 1


async def test_the_blocking_client_does_the_same(hub: RunningHub) -> None:
    def scenario() -> tuple[str, Any, list[str]]:
        with Client(hub.url, token=OPERATOR_TOKEN, retry=QUICK) as emp:
            job = emp.run("simulation", sim(result="sync"), timeout=30)
            listed = [j.id for j in emp.jobs(status="completed")]
            return job.id, job.result, listed

    job_id, result, listed = await asyncio.to_thread(scenario)
    assert result["result"] == "sync"
    assert job_id in listed
