"""A Sentinel failover, as clients live it: the primary is SIGKILLed, the sentinels promote a
replica, and the same clients carry on against it, without a restart. With
REDIS_WAIT_REPLICAS=1 every acknowledged change, claim tokens included, is on the replica
that gets promoted, so fencing tokens keep strictly increasing across the failover."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.job import JobStatus
from shared.redis_client import TRANSIENT_ERRORS, connect_server, sibling
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.redis_servers import SentinelSet

T = TypeVar("T")
pytestmark = pytest.mark.slow


@pytest.fixture
async def client(sentinel_set: SentinelSet) -> AsyncIterator[Redis]:
    redis = connect_server(sentinel_set.settings())
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def broker(client: Redis, broker_settings: BrokerSettings) -> Broker:
    settings = dataclasses.replace(broker_settings, wait_replicas=1, wait_timeout_ms=1000)
    return Broker(client, settings)


async def once_reachable(call: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    """Retry `call` while Redis is unreachable, as hub and worker loops do (with backoff)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return await call()
        except TRANSIENT_ERRORS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def test_fencing_tokens_keep_increasing_across_a_failover(
    broker: Broker, sentinel_set: SentinelSet
) -> None:
    for n in range(6):
        await broker.submit(job(id=f"f-{n}"))
    before = []
    for worker in ("w1", "w2", "w3"):
        claim = await broker.claim(worker, caps())
        assert isinstance(claim, Claim)
        before.append(claim)
    waiter = sibling(broker.redis, blocking=True, max_connections=1)
    try:
        old, _ = sentinel_set.kill_primary()
        new = sentinel_set.wait_new_primary(old)
        assert new is not old

        # The same clients, no restart: commands and blocking waits reach the new primary.
        after = await once_reachable(lambda: broker.claim("w4", caps()))
        assert isinstance(after, Claim)
        assert int(after.token) > max(int(c.token) for c in before)
        # A blocking wait answers (a wake-up token or None), rather than raising.
        await once_reachable(lambda: Broker(waiter, broker.settings).wait_for_work(["sim"], 0.2))
    finally:
        await waiter.aclose()
    # Every acknowledged change survived: the claims made before, with their tokens, are
    # still held, and their owners' reports still count.
    for claim in before:
        held = await broker.get(claim.job.id)
        assert held is not None
        assert held.status == JobStatus.ACTIVE
        assert await broker.complete(held.worker_id or "", claim.job.id, claim.token, {}) == "ok"
    later = await broker.claim("w5", caps())
    assert isinstance(later, Claim)
    assert int(later.token) > int(after.token)
