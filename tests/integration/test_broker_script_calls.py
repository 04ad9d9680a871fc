"""Script calls take a short path past redis-py's command wrapping (shared/scripts.py); what
redis-py's path did for them must still happen: reload a script the server lost, reconnect
after a lost connection. Submission memoises requirement class ids: they stay those of
`requirement_class`."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import shared.broker
from shared.broker import Broker, Claim
from shared.broker_replies import text
from shared.requirements import requirement_class
from tests.factories import caps, job


async def test_a_script_the_server_lost_is_loaded_again(broker: Broker, redis: Redis) -> None:
    await broker.submit(job(id="before"))
    await redis.script_flush()
    submitted = await broker.submit(job(id="after"))
    assert submitted.created
    assert await broker.pending_count() == 2
    claim = await broker.claim("w1", caps())
    assert isinstance(claim, Claim)
    assert claim.job.id == "before"


async def test_a_connection_the_server_closed_is_reopened(broker: Broker, redis_url: str) -> None:
    await broker.submit(job(id="first"))
    # Another client drops every other connection: the broker's pooled one among them.
    other = Redis.from_url(redis_url)
    try:
        killed = await other.client_kill_filter(_type="normal", skipme=True)
    finally:
        await other.aclose()
    assert int(killed) >= 1
    submitted = await broker.submit(job(id="second"))
    assert submitted.created
    assert submitted.job_id == "second"
    assert await broker.pending_count() == 2


async def test_a_connection_error_is_retried_as_redis_py_retries(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await broker.submit(job(id="first"))
    assert isinstance(broker.redis, Redis)
    pool = broker.redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py: untyped
    await pool.release(conn)
    real_send = conn.send_command
    failures = [RedisConnectionError("connection dropped while sending")]

    async def flaky_send(*args: Any, **options: Any) -> None:
        if failures:
            await conn.disconnect()
            raise failures.pop()
        await real_send(*args, **options)

    monkeypatch.setattr(conn, "send_command", flaky_send)
    submitted = await broker.submit(job(id="second"))
    assert not failures, "the short path was not taken"
    assert submitted.created
    assert submitted.job_id == "second"
    assert await broker.pending_count() == 2


@pytest.mark.parametrize("cache_size", [1, 4096])
async def test_class_ids_are_those_of_requirement_class(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    # Size 1 empties the memo on every new document: the refill path is exercised too.
    monkeypatch.setattr(shared.broker, "_CLASS_IDS_MAX", cache_size)
    monkeypatch.setattr(shared.broker, "_CLASS_IDS", {})
    requests = [
        job(requirements={"models": ["sdxl"]}),
        job(requirements={"models": ["sdxl"]}, customer_id="c1"),
        job(requirements={"models": ["sdxl"]}, customer_id="c2"),
        job(service="other", requirements={"models": ["sdxl"]}),
        job(requirements={"models": ["flux"]}),
        job(requirements={"models": ["sdxl"]}),
    ]
    for request in requests:
        submitted = await broker.submit(request)
        stored = await broker.redis.hget(broker.keys.job(submitted.job_id), "class_id")
        expected = requirement_class(
            request.service_type, request.customer_id, request.requirements
        )
        assert stored is not None
        assert text(stored) == expected
