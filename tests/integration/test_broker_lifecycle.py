"""Retries, dead letter, cancel, idempotency, release, retention and wake-ups."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.job import JobStatus
from shared.text import as_text
from tests.factories import caps, job
from tests.helpers import stream_fields, wait_until


async def claim(broker: Broker, worker: str = "w1") -> Claim:
    got = await broker.claim(worker, caps())
    assert isinstance(got, Claim), got
    return got


async def claim_eventually(broker: Broker, worker: str) -> Claim:
    async def attempt() -> Claim | None:
        got = await broker.claim(worker, caps())
        return got if isinstance(got, Claim) else None

    return await wait_until(attempt, timeout=5, message=f"{worker} claims a job")


async def status(broker: Broker, job_id: str) -> JobStatus:
    found = await broker.get(job_id)
    assert found is not None
    return found.status


class TestRetries:
    async def test_failure_retries_with_backoff_keeping_its_place(self, broker: Broker) -> None:
        await broker.submit(job(id="first", max_retries=2))
        await broker.submit(job(id="second"))
        c = await claim(broker)
        assert await broker.fail("w1", "first", c.token, "boom") == "retrying"
        failed = await broker.get("first")
        assert failed is not None
        assert (failed.status, failed.attempts, failed.error) == (JobStatus.PENDING, 1, "boom")
        assert failed.retry_at is not None
        # Backing off: the other job is served meanwhile.
        other = await claim(broker, "w2")
        assert other.job.id == "second"
        miss = await broker.claim("w2", caps())
        assert isinstance(miss, NoClaim)
        assert miss.next_due_ms == failed.retry_at
        again = await claim_eventually(broker, "w2")
        assert (again.job.id, again.job.attempts) == ("first", 1)

    async def test_dead_letter_after_max_retries_then_operator_retry(
        self, broker: Broker, redis: Redis
    ) -> None:
        await broker.submit(job(id="j", max_retries=1))
        c = await claim(broker)
        assert await broker.fail("w1", "j", c.token, "one") == "retrying"
        c = await claim_eventually(broker, "w2")
        assert await broker.fail("w2", "j", c.token, "two") == "failed"
        dead = await broker.get("j")
        assert dead is not None
        assert (dead.status, dead.attempts, dead.error) == (JobStatus.FAILED, 2, "two")
        assert await redis.zscore(broker.keys.finished("failed"), "j") is not None
        assert await redis.pttl(broker.keys.job("j")) > 0

        assert await broker.retry("j") == "ok"
        revived = await broker.get("j")
        assert revived is not None
        assert (revived.status, revived.attempts) == (JobStatus.PENDING, 0)
        assert await redis.pttl(broker.keys.job("j")) == -1
        assert await redis.zscore(broker.keys.finished("failed"), "j") is None
        assert isinstance(await broker.claim("w3", caps()), Claim)
        assert await broker.retry("j") == "not_failed"
        assert await broker.retry("nope") == "missing"

    async def test_non_retryable_failure_fails_at_once(self, broker: Broker) -> None:
        await broker.submit(job(id="j", max_retries=5))
        c = await claim(broker)
        assert await broker.fail("w1", "j", c.token, "bad workflow", retryable=False) == "failed"
        assert await status(broker, "j") == JobStatus.FAILED

    async def test_non_retryable_failure_counts_the_one_attempt_made(
        self, broker: Broker, redis: Redis
    ) -> None:
        """`attempts` counts runs made, not retries forgone: a job rejected on its first run
        (ComfyUI's HTTP 400) ran once, whatever max_retries allowed (the default 3 here)."""
        await broker.submit(job(id="j"))
        c = await claim(broker)
        assert await broker.fail("w1", "j", c.token, "HTTP 400", retryable=False) == "failed"
        dead = await broker.get("j")
        assert dead is not None
        assert (dead.status, dead.attempts, dead.max_retries) == (JobStatus.FAILED, 1, 3)
        assert await redis.zscore(broker.keys.finished("failed"), "j") is not None
        events = await stream_fields(redis, broker.keys.events)
        failed = [e for e in events if e[b"type"] == b"failed"]
        assert [orjson.loads(e[b"data"])["attempts"] for e in failed] == [1]
        # Still a dead letter like any other: the operator's retry starts afresh.
        assert await broker.retry("j") == "ok"
        assert (await claim(broker)).job.attempts == 0

    async def test_non_retryable_failure_after_a_retry_counts_both_attempts(
        self, broker: Broker, redis: Redis
    ) -> None:
        await broker.submit(job(id="j", max_retries=3))
        c = await claim(broker)
        assert await broker.fail("w1", "j", c.token, "flaky") == "retrying"
        await wait_until(lambda: _retry_due(broker, redis), timeout=5)
        c = await claim(broker, "w2")
        assert await broker.fail("w2", "j", c.token, "bad workflow", retryable=False) == "failed"
        dead = await broker.get("j")
        assert dead is not None
        assert (dead.status, dead.attempts, dead.error) == (JobStatus.FAILED, 2, "bad workflow")

    async def test_failed_worker_is_passed_over_but_not_banned(
        self, broker: Broker, redis: Redis
    ) -> None:
        await broker.submit(job(id="j", max_retries=3))
        c = await claim(broker, "w1")
        await broker.fail("w1", "j", c.token, "flaky")
        await wait_until(lambda: _retry_due(broker, redis), timeout=5)
        assert isinstance(await broker.claim("w1", caps()), NoClaim)  # avoided for now...
        # ...but with nobody else to take it, w1 gets it back after the avoidance window.
        again = await claim_eventually(broker, "w1")
        assert again.job.id == "j"

    async def test_another_capable_worker_gets_the_retry_first(
        self, broker: Broker, redis: Redis
    ) -> None:
        await broker.submit(job(id="j", max_retries=3))
        c = await claim(broker, "w1")
        await broker.fail("w1", "j", c.token, "flaky")
        await wait_until(lambda: _retry_due(broker, redis), timeout=5)
        assert isinstance(await broker.claim("w1", caps()), NoClaim)
        taken = await broker.claim("w2", caps())
        assert isinstance(taken, Claim)
        assert taken.job.id == "j"


async def _retry_due(broker: Broker, redis: Redis) -> bool:
    await broker.reap()  # promotes retries whose backoff has elapsed
    return await redis.zcard(broker.keys.delayed) == 0


class TestCancel:
    async def test_cancel_pending_removes_it_from_the_queue(self, broker: Broker) -> None:
        await broker.submit(job(id="j"))
        result = await broker.cancel("j", "changed my mind")
        assert (result.outcome, result.was) == ("cancelled", "pending")
        assert await broker.pending_count() == 0
        assert isinstance(await broker.claim("w1", caps()), NoClaim)
        cancelled = await broker.get("j")
        assert cancelled is not None
        assert (cancelled.status, cancelled.message) == (JobStatus.CANCELLED, "changed my mind")

    async def test_cancel_active_signals_the_worker_and_rejects_its_outcome(
        self, broker: Broker
    ) -> None:
        await broker.submit(job(id="j"))
        pubsub = broker.redis.pubsub()
        await pubsub.subscribe(broker.keys.control("w1"))
        c = await claim(broker)
        result = await broker.cancel("j")
        assert (result.outcome, result.was, result.worker_id) == ("cancelled", "active", "w1")
        message = await wait_until(
            lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1), timeout=5
        )
        assert message["data"] == b"cancel j"
        assert await broker.complete("w1", "j", c.token, {"late": True}) == "cancelled"
        final = await broker.get("j")
        assert final is not None
        assert (final.status, final.result) == (JobStatus.CANCELLED, None)
        await pubsub.aclose()

    async def test_cancel_after_completion_changes_nothing(self, broker: Broker) -> None:
        await broker.submit(job(id="j"))
        c = await claim(broker)
        await broker.complete("w1", "j", c.token, 1)
        assert (await broker.cancel("j")).outcome == "unchanged"
        assert await status(broker, "j") == JobStatus.COMPLETED
        assert (await broker.cancel("ghost")).outcome == "missing"

    async def test_cancel_a_backing_off_retry(self, broker: Broker) -> None:
        await broker.submit(job(id="j"))
        c = await claim(broker)
        await broker.fail("w1", "j", c.token, "x")
        assert (await broker.cancel("j")).was == "pending"
        assert await broker.redis.zcard(broker.keys.delayed) == 0


class TestIdempotency:
    async def test_repeated_id_returns_the_original(self, broker: Broker) -> None:
        first = await broker.submit(job(id="j", payload={"v": 1}))
        second = await broker.submit(job(id="j", payload={"v": 2}))
        assert (first.created, second.created) == (True, False)
        stored = await broker.get("j")
        assert stored is not None
        assert stored.payload == {"v": 1}
        assert await broker.pending_count() == 1

    async def test_repeated_idempotency_key_returns_the_original(self, broker: Broker) -> None:
        first = await broker.submit(job(), idempotency_key="order-42")
        second = await broker.submit(job(), idempotency_key="order-42")
        assert second.job_id == first.job_id
        assert not second.created
        assert await broker.pending_count() == 1
        key = broker.keys.idempotency(__import__("hashlib").sha256(b"order-42").hexdigest())
        assert await broker.redis.pttl(key) > 0


async def test_release_puts_the_job_back_without_penalty_in_its_place(broker: Broker) -> None:
    await broker.submit_many([job(id="a"), job(id="b")])
    c = await claim(broker)
    assert c.job.id == "a"
    assert await broker.release("w1", "a", c.token) == "ok"
    again = await claim(broker, "w2")
    assert (again.job.id, again.job.attempts) == ("a", 0)


async def test_deregister_returns_held_jobs(broker: Broker) -> None:
    await broker.register_worker("w1", caps())
    await broker.submit(job(id="j"))
    await claim(broker)
    assert await broker.deregister_worker("w1") == 1
    assert await status(broker, "j") == JobStatus.PENDING


async def test_finished_jobs_get_the_retention_ttl(broker: Broker, redis: Redis) -> None:
    retention_ms = broker.settings.retention_ms
    await broker.submit_many([job(id="done"), job(id="gone"), job(id="bad", max_retries=0)])
    c = await claim(broker)
    await broker.complete("w1", c.job.id, c.token, {"r": 1})
    await broker.cancel("gone")
    c = await claim(broker)
    await broker.fail("w1", c.job.id, c.token, "x")
    for job_id in ("done", "gone", "bad"):
        ttl = await redis.pttl(broker.keys.job(job_id))
        assert 0 < ttl <= retention_ms, job_id
    assert await broker.cleanup() == {"completed": 0, "failed": 0, "cancelled": 0}


async def test_idle_worker_wakes_when_a_job_arrives(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    blocking = Redis.from_url(redis_url, socket_timeout=None)
    waiter = Broker(blocking, broker.settings)
    try:
        assert await waiter.wait_for_work(["sim"], timeout=0.05) is None
        woken = asyncio.create_task(waiter.wait_for_work(["sim"], timeout=10))
        await wait_until(lambda: _blocked_clients(redis), timeout=5)
        await broker.submit(job(id="j"))
        hops = await asyncio.wait_for(woken, timeout=5)
        assert hops == 3
        c = await waiter.claim("w", caps(), hops=hops)
        assert isinstance(c, Claim)
    finally:
        await blocking.aclose()


async def _blocked_clients(redis: Redis) -> bool:
    info = await redis.info("clients")
    return int(info["blocked_clients"]) > 0


async def test_events_carry_ordered_per_job_sequence_numbers(broker: Broker, redis: Redis) -> None:
    await broker.submit(job(id="j"))
    c = await claim(broker)
    for p in (10, 50, 90):
        await broker.progress("w1", "j", c.token, p, f"at {p}")
    await broker.complete("w1", "j", c.token, None)
    entries = await stream_fields(redis, broker.keys.events)
    mine = [e for e in entries if e.get(b"job") == b"j"]
    types = [as_text(e[b"type"]) for e in mine]
    assert types == ["accepted", "claimed", "progress", "progress", "progress", "completed"]
    assert [int(e[b"seq"]) for e in mine] == [1, 2, 3, 4, 5, 6]
