"""Leases, heartbeats and fencing: at-least-once execution, exactly-once outcome."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import wait_until

SHORT_LEASE = BrokerSettings(
    lease_timeout=0.5,
    heartbeat_interval=0.1,
    retry_backoff_base=0.05,
    retry_backoff_cap=0.1,
    avoid_window=0.0,
    orphan_grace=0.3,
)


@pytest.fixture
def fast(redis: Redis) -> Broker:
    return Broker(redis, SHORT_LEASE)


async def claim_one(broker: Broker, worker: str) -> Claim:
    await broker.register_worker(worker, caps())
    claim = await broker.claim(worker, caps())
    assert isinstance(claim, Claim)
    return claim


async def reap_until_recovered(broker: Broker, job_id: str) -> None:
    async def recovered() -> bool:
        report = await broker.reap()
        return any(j == job_id for _, j, _ in report.recovered)

    await wait_until(recovered, timeout=5, interval=0.05, message=f"{job_id} recovered")


async def test_zombie_worker_is_fenced_out_after_its_job_moves_on(fast: Broker) -> None:
    await fast.submit(job(id="j"))
    first = await claim_one(fast, "w1")
    await reap_until_recovered(fast, "j")  # w1 never heartbeats: its lease expires
    second = await claim_one(fast, "w2")
    assert second.job.id == "j"
    assert second.job.attempts == 1
    assert second.token != first.token

    assert await fast.progress("w1", "j", first.token, 50) == "stale"
    assert await fast.complete("w1", "j", first.token, {"zombie": True}) == "stale"
    assert await fast.fail("w1", "j", first.token, "zombie") == "stale"
    assert await fast.release("w1", "j", first.token) == "stale"
    current = await fast.get("j")
    assert current is not None
    assert (current.status, current.worker_id, current.result) == (JobStatus.ACTIVE, "w2", None)

    assert await fast.complete("w2", "j", second.token, {"ok": 1}) == "ok"
    done = await fast.get("j")
    assert done is not None
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"ok": 1})


async def test_a_report_under_a_token_that_only_begins_like_the_leases_is_stale(
    fast: Broker, redis: Redis
) -> None:
    """The fence compares the whole token the lease records (the text before its first
    '|'): a prefix of it, or it with the lease's separator, is another token, and such a
    report leaves the lease as it was."""
    await redis.set(fast.keys.tokens, 41)
    await fast.submit(job(id="j"))
    held = await claim_one(fast, "w1")
    assert held.token == "42"
    for other in ("4", "42|", "421", ""):
        assert await fast.complete("w1", "j", other, {"wrong": other}) == "stale"
    assert await fast.complete("w1", "j", "42", {"ok": 1}) == "ok"
    done = await fast.get("j")
    assert done is not None
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"ok": 1})


async def test_a_heartbeating_worker_keeps_a_long_job(fast: Broker) -> None:
    await fast.submit(job(id="j"))
    claim = await claim_one(fast, "w1")
    deadline = time.monotonic() + 3 * SHORT_LEASE.lease_timeout
    while time.monotonic() < deadline:
        assert await fast.heartbeat("w1", status="busy", running={"j": claim.token}) == []
        report = await fast.reap()
        assert report.recovered == []
        await asyncio.sleep(SHORT_LEASE.heartbeat_interval)  # pacing the heartbeat itself
    assert await fast.complete("w1", "j", claim.token, None) == "ok"


async def test_a_silent_worker_loses_its_job_after_the_lease_timeout(fast: Broker) -> None:
    await fast.submit(job(id="j", max_retries=3))
    await claim_one(fast, "w1")
    started = time.monotonic()
    await reap_until_recovered(fast, "j")
    assert time.monotonic() - started >= SHORT_LEASE.lease_timeout * 0.9
    lost = await fast.get("j")
    assert lost is not None
    assert (lost.status, lost.attempts) == (JobStatus.PENDING, 1)
    assert "stopped heartbeating" in (lost.error or "")
    worker = await fast.redis.hget(fast.keys.worker("w1"), "status")
    assert worker == b"offline"


async def test_a_worker_revived_after_being_presumed_dead_learns_its_jobs_are_gone(
    fast: Broker,
) -> None:
    await fast.submit(job(id="j"))
    claim = await claim_one(fast, "w1")
    await reap_until_recovered(fast, "j")
    assert await fast.heartbeat("w1", running={"j": claim.token}) == ["j"]


async def test_execution_timeout_retries_and_signals_the_worker(fast: Broker) -> None:
    await fast.submit(job(id="j", timeout_seconds=0.2, max_retries=1))
    pubsub = fast.redis.pubsub()
    await pubsub.subscribe(fast.keys.control("w1"))
    claim = await claim_one(fast, "w1")

    async def timed_out() -> bool:
        await fast.heartbeat("w1", running={"j": claim.token})  # alive, just slow
        return bool((await fast.reap()).timed_out)

    await wait_until(timed_out, timeout=5, interval=0.05)
    job_now = await fast.get("j")
    assert job_now is not None
    assert job_now.status == JobStatus.PENDING
    assert "timed out after 0 s" in (job_now.error or "")
    message = await wait_until(
        lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), timeout=5
    )
    assert message["data"] == b"cancel j"
    assert await fast.complete("w1", "j", claim.token, None) == "stale"
    await pubsub.aclose()


async def test_an_orphaned_lease_returns_without_penalty(fast: Broker) -> None:
    # The claim succeeded in Redis but its reply never reached the worker.
    await fast.submit(job(id="j"))
    await claim_one(fast, "w1")

    async def released() -> bool:
        await fast.heartbeat("w1", running={})
        found = await fast.get("j")
        return found is not None and found.status == JobStatus.PENDING

    await wait_until(released, timeout=5, interval=0.05)
    again = await fast.get("j")
    assert again is not None
    assert again.attempts == 0


async def test_heartbeat_reports_cancelled_jobs_as_revoked(fast: Broker) -> None:
    await fast.submit(job(id="j"))
    claim = await claim_one(fast, "w1")
    assert (await fast.cancel("j")).outcome == "cancelled"
    assert await fast.heartbeat("w1", running={"j": claim.token}) == ["j"]
    assert await fast.progress("w1", "j", claim.token, 10) == "cancelled"
    # Reporting back drops the lease, so the worker is free of the job for isolation too.
    assert await fast.redis.hlen(fast.keys.leases("w1")) == 0


async def test_reaping_twice_recovers_once(fast: Broker) -> None:
    await fast.submit(job(id="j"))
    await claim_one(fast, "w1")
    await reap_until_recovered(fast, "j")
    assert (await fast.reap()).recovered == []
    again = await fast.get("j")
    assert again is not None
    assert again.attempts == 1


async def test_a_lease_clears_what_a_failed_run_left_on_the_job(fast: Broker, redis: Redis) -> None:
    """A retry leaves its backoff and the avoided worker on the job; the next lease, by
    whoever takes it, clears them, and the completion clears the lease's token."""
    await fast.submit(job(id="j"))
    first = await claim_one(fast, "w1")
    assert await fast.fail("w1", "j", first.token, "boom") == "retrying"
    key = fast.keys.job("j")
    left = await redis.hmget(key, "avoid_worker", "avoid_until", "retry_at")
    assert left[0] == b"w1"
    assert None not in left

    taken: list[Claim] = []

    async def claimed_again() -> bool:
        got = await fast.claim("w2", caps())
        taken.extend([got] if isinstance(got, Claim) else [])
        return bool(taken)

    await fast.register_worker("w2", caps())
    await wait_until(claimed_again, timeout=5, interval=0.02, message="the retry claimed")
    assert await redis.hmget(key, "avoid_worker", "avoid_until", "retry_at") == [None] * 3
    assert taken[0].job.attempts == 1
    assert await fast.complete("w2", "j", taken[0].token, 1) == "ok"
    assert await redis.hmget(key, "token", "retry_at", "fair_charge") == [None] * 3
