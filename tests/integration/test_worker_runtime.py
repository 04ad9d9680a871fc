"""The worker process logic, in-process against a real Redis, with the simulation connector."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.job import JobStatus
from tests.factories import caps, job
from tests.helpers import stream_fields, wait_until
from tests.worker_support import (
    finished,
    make_worker,
    running_worker,
    sim,
    status_is,
    worker_settings,
)
from worker.runtime import Worker


def count_claims(worker: Worker) -> list[int]:
    """From now on, one entry per claim call the worker makes (its hop count), in a list the
    test reads."""
    calls: list[int] = []
    plain_claim = worker.broker.claim

    async def counting_claim(*args: Any, **kwargs: Any) -> Claim | NoClaim:
        calls.append(kwargs.get("hops", 0))
        return await plain_claim(*args, **kwargs)

    worker.broker.claim = counting_claim  # type: ignore[method-assign]
    return calls


async def test_burst_worker_completes_every_job_with_its_result(
    broker: Broker, redis_url: str
) -> None:
    ids = [
        (await broker.submit(job("simulation", payload=sim(result={"n": n})))).job_id
        for n in range(5)
    ]
    await make_worker(worker_settings(redis_url), burst=True).run()
    for n, job_id in enumerate(ids):
        done = await broker.get(job_id)
        assert done is not None
        assert done.status == JobStatus.COMPLETED
        assert done.result == {"steps": 3, "result": {"n": n}, "worker_service": "simulation"}
        assert (done.worker_id, done.progress) == ("w1", 100.0)


async def test_progress_reaches_the_broker(broker: Broker, redis: Redis, redis_url: str) -> None:
    job_id = (await broker.submit(job("simulation", payload=sim(steps=4)))).job_id
    await make_worker(worker_settings(redis_url), burst=True).run()
    events = [
        e
        for e in await stream_fields(redis, broker.keys.events)
        if e.get(b"job") == job_id.encode()
    ]
    progress = [e for e in events if e[b"type"] == b"progress"]
    assert len(progress) == 4
    assert [e[b"type"] for e in events][-1] == b"completed"


async def test_failure_is_retried_then_dead_lettered(broker: Broker, redis_url: str) -> None:
    job_id = (
        await broker.submit(job("simulation", max_retries=1, payload=sim(fail="model exploded")))
    ).job_id
    await make_worker(worker_settings(redis_url), burst=True).run()
    failed = await broker.get(job_id)
    assert failed is not None
    assert (failed.status, failed.attempts, failed.error) == (JobStatus.FAILED, 2, "model exploded")


async def test_non_retryable_failure_fails_at_once(broker: Broker, redis_url: str) -> None:
    job_id = (
        await broker.submit(
            job("simulation", max_retries=5, payload=sim(fail="bad", fail_retryable=False))
        )
    ).job_id
    await make_worker(worker_settings(redis_url), burst=True).run()
    failed = await broker.get(job_id)
    assert failed is not None
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)


async def test_cancel_mid_run_interrupts_and_frees_the_slot(broker: Broker, redis_url: str) -> None:
    async with running_worker(worker_settings(redis_url)) as worker:
        long_id = (
            await broker.submit(job("simulation", payload=sim(steps=1000, step_ms=20)))
        ).job_id
        await status_is(broker, long_id, JobStatus.ACTIVE)
        await wait_until(lambda: long_id in worker.running)
        assert (await broker.cancel(long_id)).outcome == "cancelled"
        await wait_until(lambda: not worker.running, message="slot freed")
        assert worker.history[0].job_id == long_id
        assert worker.history[0].status == "cancelled"
        # The slot is free again: the next job runs.
        next_id = (await broker.submit(job("simulation", payload=sim()))).job_id
        assert (await finished(broker, next_id)).status == JobStatus.COMPLETED
    final = await broker.get(long_id)
    assert final is not None
    assert final.status == JobStatus.CANCELLED


async def test_execution_timeout_interrupts_the_job(broker: Broker, redis_url: str) -> None:
    async with running_worker(worker_settings(redis_url)):
        job_id = (
            await broker.submit(
                job(
                    "simulation",
                    timeout_seconds=0.3,
                    max_retries=0,
                    payload=sim(steps=100, step_ms=20),
                )
            )
        ).job_id
        done = await finished(broker, job_id)
    assert done.status == JobStatus.FAILED
    assert "timed out" in (done.error or "")


async def test_workers_only_get_jobs_they_match(broker: Broker, redis_url: str) -> None:
    small = worker_settings(
        redis_url, "small", GPU_COUNT="1", GPU_MEMORY_GB="24", SIMULATION_SERVICE_NAME="sim"
    )
    big = worker_settings(
        redis_url, "big", GPU_COUNT="1", GPU_MEMORY_GB="80", SIMULATION_SERVICE_NAME="sim"
    )
    big_jobs = [
        (
            await broker.submit(
                job("sim", payload=sim(), requirements={"hardware": {"gpu": {"memory_gb": 40}}})
            )
        ).job_id
        for _ in range(4)
    ]
    any_jobs = [(await broker.submit(job("sim", payload=sim()))).job_id for _ in range(4)]
    async with running_worker(small), running_worker(big):
        for job_id in big_jobs + any_jobs:
            await finished(broker, job_id)
    for job_id in big_jobs:
        done = await broker.get(job_id)
        assert done is not None
        assert done.worker_id == "big"


async def test_pause_and_resume(broker: Broker, redis_url: str) -> None:
    async with running_worker(worker_settings(redis_url)) as worker:
        await worker.set_state("paused")
        job_id = (await broker.submit(job("simulation", payload=sim()))).job_id
        await wait_until(lambda: worker.state == "paused")
        assert await broker.queue_position(job_id) == 0  # still waiting
        await worker.set_state("active")
        assert (await finished(broker, job_id)).status == JobStatus.COMPLETED


async def test_graceful_stop_finishes_short_jobs_and_releases_long_ones(
    broker: Broker, redis_url: str
) -> None:
    settings = worker_settings(redis_url, CONCURRENT_JOBS="2", WORKER_SHUTDOWN_GRACE_SECONDS="0.5")
    worker = make_worker(settings)
    task = asyncio.create_task(worker.run())
    short_id = (await broker.submit(job("simulation", payload=sim(steps=5, step_ms=20)))).job_id
    long_id = (await broker.submit(job("simulation", payload=sim(steps=1000, step_ms=20)))).job_id
    await wait_until(lambda: len(worker.running) == 2)
    worker.stop()
    await asyncio.wait_for(task, timeout=20)
    short, long = await broker.get(short_id), await broker.get(long_id)
    assert short is not None
    assert long is not None
    assert short.status == JobStatus.COMPLETED
    assert (long.status, long.attempts) == (JobStatus.PENDING, 0)  # released, no penalty
    record = await broker.redis.hget(broker.keys.worker("w1"), "status")
    assert record == b"offline"


async def test_heartbeats_continue_while_a_job_blocks_the_event_loop(
    broker: Broker, redis_url: str
) -> None:
    # The job below blocks the event loop for longer than the lease: only a heartbeat from
    # another thread keeps the worker alive.
    async with running_worker(worker_settings(redis_url, LEASE_TIMEOUT_SECONDS="1")) as worker:
        job_id = (await broker.submit(job("simulation", payload=sim(steps=1, step_ms=1)))).job_id
        await finished(broker, job_id)

        async def hog() -> None:
            time.sleep(1.5)  # noqa: ASYNC251 - deliberately blocks the loop, as a bad connector would

        blocked_id = (
            await broker.submit(job("simulation", payload=sim(steps=200, step_ms=10)))
        ).job_id
        await wait_until(lambda: blocked_id in worker.running)
        await hog()
        report = await broker.reap()
        assert report.recovered == []
        assert (await finished(broker, blocked_id)).status == JobStatus.COMPLETED


async def test_a_draining_worker_claims_its_next_job_in_the_completing_call(
    broker: Broker, redis_url: str
) -> None:
    """One round trip per job: after its first claim, a one-slot worker takes each next job
    in the call that completes the previous one, in queue order, each exactly once."""
    ids = [
        (await broker.submit(job("simulation", priority=50, payload=sim(steps=1)))).job_id
        for _ in range(20)
    ]
    worker = make_worker(worker_settings(redis_url, CONCURRENT_JOBS="1"), burst=True)
    claims = count_claims(worker)
    await worker.run()
    done = await broker.get_many(ids)
    assert [j.status for j in done] == [JobStatus.COMPLETED] * 20
    assert [o.job_id for o in reversed(worker.history)] == ids
    assert len(claims) <= 3, f"{len(claims)} separate claims for 20 jobs"


async def test_complete_and_claim_answers_like_complete_then_claim(broker: Broker) -> None:
    offer = Broker.encode_capabilities(caps(services=("simulation",)))
    first, second = [
        (await broker.submit(job("simulation", id=i))).job_id for i in ("first", "second")
    ]
    held = await broker.claim("w1", offer)
    assert isinstance(held, Claim)
    assert held.job.id == first
    fence, nxt = await broker.complete_and_claim("w1", first, held.token, {"ok": 1}, offer)
    assert fence == "ok"
    assert isinstance(nxt, Claim)
    assert nxt.job.id == second
    # A stale completion is refused, and the (free) slot still gets an answer.
    fence, none = await broker.complete_and_claim("w1", first, held.token, {"ok": 2}, offer)
    assert fence == "stale"
    assert none == NoClaim(reason="empty", next_due_ms=None)
    done = await broker.get(first)
    assert done is not None
    assert done.result == {"ok": 1}
    await broker.set_worker_state("w1", "paused")
    fence, paused = await broker.complete_and_claim("w1", second, nxt.token, {}, offer)
    assert (fence, paused) == ("ok", NoClaim(reason="paused", next_due_ms=None))


async def test_a_stuck_control_listener_cannot_keep_a_stopped_worker_registered(
    broker: Broker, redis_url: str, monkeypatch: Any
) -> None:
    """A background task that ignores its cancellation (as redis-py's pub/sub close can hang
    on Python 3.11) is left behind after a bounded wait: the worker still stops its
    heartbeat and deregisters, instead of beating on as a ghost."""
    worker = make_worker(worker_settings(redis_url))
    release = asyncio.Event()

    async def stuck_control(on_cancel: Any) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallowed: this task will not stop when asked

    monkeypatch.setattr(worker.link, "run_control", stuck_control)
    monkeypatch.setattr("worker.runtime.BACKGROUND_STOP_SECONDS", 0.2)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: worker.status == "idle", timeout=10)
    worker.stop()
    try:
        await asyncio.wait_for(task, timeout=10)
        assert await broker.redis.zscore(broker.keys.workers, "w1") is None
    finally:
        release.set()


async def test_stop_ends_an_idle_workers_wait_for_work_at_once(
    broker: Broker, redis_url: str
) -> None:
    """stop() cancels the blocking wait itself: a worker idle under a 5-minute poll stops
    long before the poll would have ended, deregistered."""
    worker = make_worker(worker_settings(redis_url, IDLE_POLL_SECONDS="300"))
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: worker.status == "idle" and worker._waiting is not None)
    worker.stop()
    await asyncio.wait_for(task, timeout=30)
    assert await broker.redis.hget(broker.keys.worker("w1"), "status") == b"offline"


async def test_a_wait_for_work_that_fails_is_an_outage_and_the_worker_waits_again(
    broker: Broker, redis_url: str
) -> None:
    """A wait whose connection breaks does not end the worker: it waits again, and a job
    submitted afterwards still runs."""
    async with running_worker(worker_settings(redis_url)) as worker:
        await wait_until(lambda: worker._waiting is not None)
        await broker.redis.client_kill_filter(_type="normal", skipme=True)
        job_id = (await broker.submit(job("simulation", payload=sim()))).job_id
        assert (await finished(broker, job_id, timeout=20)).status == JobStatus.COMPLETED


async def test_a_completion_that_found_nothing_next_is_not_followed_by_another_claim(
    broker: Broker, redis_url: str
) -> None:
    """The call that completes a job also claims the next; when it finds nothing, the worker
    waits for work at once instead of asking again (one round trip less on Redis just as the
    next submission arrives), and still gets the next job."""
    async with running_worker(worker_settings(redis_url, CONCURRENT_JOBS="1")) as worker:
        await wait_until(lambda: worker._waiting is not None)
        claims = count_claims(worker)
        for _ in range(3):
            job_id = (await broker.submit(job("simulation", payload=sim()))).job_id
            assert (await finished(broker, job_id)).status == JobStatus.COMPLETED
            await wait_until(lambda: worker._waiting is not None and not worker.running)
        assert claims == []
