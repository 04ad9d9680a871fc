"""Claims are atomic under contention and cheap however many unrunnable jobs wait."""

from __future__ import annotations

import asyncio
from collections import Counter

from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.scripts import Scripts
from tests.factories import caps, gpu, job


async def test_fifty_concurrent_claimers_claim_each_of_2000_jobs_exactly_once(
    redis_url: str, broker: Broker
) -> None:
    for start in range(0, 2000, 500):
        await broker.submit_many([job(id=f"j{i}") for i in range(start, start + 500)])
    claimed: list[str] = []
    offer = caps()

    async def claimer(n: int) -> None:
        # Each claimer has its own connection, so claims really interleave in Redis.
        client = Redis.from_url(redis_url, socket_timeout=None)
        own = Broker(client, broker.settings)
        try:
            while isinstance(c := await own.claim(f"w{n}", offer), Claim):
                claimed.append(c.job.id)
                assert await own.complete(f"w{n}", c.job.id, c.token, None) == "ok"
        finally:
            await client.aclose()

    await asyncio.gather(*(claimer(n) for n in range(50)))
    counts = Counter(claimed)
    assert len(counts) == 2000
    assert set(counts.values()) == {1}
    assert await broker.pending_count() == 0


async def test_head_of_line_small_worker_gets_its_job_behind_10000_big_ones(
    broker: Broker, redis: Redis
) -> None:
    big = {"hardware": {"gpu": {"memory_gb": 80}}}
    for start in range(0, 10_000, 1000):
        await broker.submit_many(
            [job(priority=90, requirements=big) for _ in range(start, start + 1000)]
        )
    await broker.submit(
        job(id="small", priority=10, requirements={"hardware": {"gpu": {"memory_gb": 16}}})
    )
    offer = caps(hardware={"gpus": [gpu(24)]})
    # One script call examining at most two requirement classes finds it: the 10,000 jobs
    # ahead form a single class that is checked once, not 10,000 times.
    scripts = Scripts(redis, broker.keys, events_max=1000, retention_ms=60_000)
    reply = await scripts.call("claim", "w24", broker.encode_capabilities(offer), 2, 0, 0)
    assert reply[0] == b"job"
    flat = dict(zip(reply[2::2], reply[3::2], strict=True))
    assert flat[b"id"] == b"small"


async def test_scan_past_the_budget_still_finds_the_match(broker: Broker, redis: Redis) -> None:
    # 300 distinct classes (one per customer) this dedicated worker cannot run, ahead of its
    # own job: with a budget of 64 classes per call the broker continues in further calls.
    await broker.submit_many(
        [
            job(customer_id=f"c{i}", priority=90, requirements={"models": ["big"]})
            for i in range(300)
        ]
    )
    await broker.submit(job(id="mine", customer_id="c7", priority=10))
    offer = caps()
    scripts = Scripts(redis, broker.keys, events_max=1000, retention_ms=60_000)
    first = await scripts.call("claim", "w", broker.encode_capabilities(offer), 64, 0, 0)
    assert first[:2] == [b"none", b"more"]
    claim = await broker.claim("w", offer)
    assert isinstance(claim, Claim)
    assert claim.job.id == "mine"


async def test_dedicated_worker_scans_only_its_customers_classes(
    broker: Broker, redis: Redis
) -> None:
    await broker.submit_many([job(customer_id=f"c{i}", priority=90) for i in range(500)])
    await broker.submit(job(id="mine", customer_id="acme", priority=10))
    dedicated = caps(customer_access={"isolation": "strict", "allowed_customers": ["acme"]})
    scripts = Scripts(redis, broker.keys, events_max=1000, retention_ms=60_000)
    reply = await scripts.call("claim", "w", broker.encode_capabilities(dedicated), 1, 0, 0)
    assert reply[0] == b"job"
