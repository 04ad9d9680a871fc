"""`bench claim` sets each claim's Redis time against the least claim's
(bench/lua/claim_floor.lua) on the same data: the floor must take a job the worker can run,
under a lease the real `complete` accepts, or the comparison would be of different work.
Asserts what the comparison is made of, never a timing."""

from __future__ import annotations

from redis.asyncio import Redis

from bench.claim import OFFER, floor_claim, load_floor, measure
from shared.broker import Broker, Claim
from shared.job import JobRequest
from shared.validation import convert


def _job(memory_gb: int, priority: int) -> JobRequest:
    body = {
        "service_type": "sim",
        "priority": priority,
        "requirements": {"hardware": {"gpu": {"memory_gb": memory_gb}}},
    }
    return convert(body, JobRequest)


async def test_the_least_claim_takes_a_runnable_job_under_a_lease_complete_accepts(
    redis: Redis,
) -> None:
    broker = Broker(redis)
    await broker.submit(_job(80, priority=90))  # ranks first; the 24 GB worker cannot run it
    first = await broker.submit(_job(8, priority=10))
    second = await broker.submit(_job(8, priority=10))
    # A real claim scans past the 80 GB class and records both verdicts in the memo.
    claimed = await broker.claim("worker-a", OFFER)
    assert isinstance(claimed, Claim)
    assert claimed.job.id == first.job_id

    function = await load_floor(redis)
    least = await floor_claim(
        redis, function, broker, "bench-floor", broker.encode_capabilities(OFFER)
    )

    assert least.job.id == second.job_id
    assert least.job.status == "active"
    assert await broker.complete("bench-floor", least.job.id, least.token, None) == "ok"
    done = await broker.get(second.job_id)
    assert done is not None
    assert done.status == "completed"


async def test_every_measured_claim_is_paired_with_a_least_claim() -> None:
    row = await measure(depth=300, claims=10)

    depth, claims = row[0], row[1]
    floor_p50, ratio = row[6], row[7]
    assert (depth, claims) == (300, 10)
    assert floor_p50 > 0
    assert ratio == row[4] / floor_p50
