"""Affinity in the claim (SCHEDULING_POLICIES=affinity): a worker prefers the jobs whose
models are warm on it, within AFFINITY_PRIORITY_WINDOW points of the best match, and a job
passed over is taken once AFFINITY_MAX_DELAY_SECONDS ran out."""

from __future__ import annotations

from dataclasses import replace

from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.broker_replies import Head
from shared.capabilities import Capabilities
from shared.settings import BrokerSettings
from tests.factories import caps, job

SDXL_WARM = caps(models=["sdxl", "flux"], warm_models=["sdxl"])


def affinity_broker(
    redis: Redis,
    settings: BrokerSettings,
    affinity_max_delay: float = 30.0,
    affinity_window: int = 10,
) -> Broker:
    return Broker(
        redis,
        replace(
            settings,
            scheduling_policies=("affinity",),
            affinity_max_delay=affinity_max_delay,
            affinity_window=affinity_window,
        ),
    )


async def take(broker: Broker, worker: str, offer: Capabilities) -> str | None:
    claim = await broker.claim(worker, offer)
    if not isinstance(claim, Claim):
        return None
    assert await broker.complete(worker, claim.job.id, claim.token, None) == "ok"
    return claim.job.id


async def drain(broker: Broker, worker: str, offer: Capabilities) -> list[str]:
    out = []
    while (taken := await take(broker, worker, offer)) is not None:
        out.append(taken)
    return out


async def submit_cold_then_warm(broker: Broker, warm_priority: int = 50) -> None:
    await broker.submit(job(id="cold", priority=50, requirements={"models": ["flux"]}))
    await broker.submit_many(
        [
            job(id=f"warm{i}", priority=warm_priority, requirements={"models": ["sdxl"]})
            for i in range(3)
        ]
    )


async def test_strict_order_without_policies(broker: Broker) -> None:
    await submit_cold_then_warm(broker)
    assert await drain(broker, "w", SDXL_WARM) == ["cold", "warm0", "warm1", "warm2"]


async def test_a_worker_takes_the_jobs_warm_on_it_first(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings, affinity_max_delay=3600.0)
    await submit_cold_then_warm(broker)
    assert await drain(broker, "w", SDXL_WARM) == ["warm0", "warm1", "warm2", "cold"]


async def test_peek_names_the_job_the_claim_takes(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings)
    await submit_cold_then_warm(broker)
    head = await broker.peek("w", Broker.encode_capabilities(SDXL_WARM))
    claim = await broker.claim("w", SDXL_WARM)
    assert isinstance(claim, Claim)
    assert isinstance(head, Head)
    assert head.job_id == claim.job.id == "warm0"


async def test_a_job_with_no_models_or_models_not_all_warm_is_not_warm(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings)
    await broker.submit(job(id="plain", priority=50))
    await broker.submit(job(id="half", priority=50, requirements={"models": ["sdxl", "flux"]}))
    await broker.submit(job(id="warm", priority=50, requirements={"models": ["sdxl"]}))
    assert await drain(broker, "w", SDXL_WARM) == ["warm", "plain", "half"]


async def test_affinity_stays_within_the_priority_window(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings, affinity_window=10)
    await submit_cold_then_warm(broker, warm_priority=39)  # 11 points below: outside
    await broker.submit(job(id="warm-in", priority=40, requirements={"models": ["sdxl"]}))
    assert await drain(broker, "w", SDXL_WARM) == [
        "warm-in",  # 10 points below the cold job: inside the window, and warm
        "cold",
        "warm0",
        "warm1",
        "warm2",
    ]


async def test_a_passed_over_job_is_taken_once_its_bound_ran_out(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    # A bound of 0: the first pass-over is allowed (it starts the clock), the next claim
    # finds the bound run out and must take the job, warm work waiting or not.
    broker = affinity_broker(redis, broker_settings, affinity_max_delay=0.0)
    await submit_cold_then_warm(broker)
    first = await broker.claim("w", SDXL_WARM)
    assert isinstance(first, Claim)
    assert first.job.id == "warm0"
    held = await redis.hmget(broker.keys.job("cold"), "held_by", "held_since", "held_until")
    assert held[0] == b"affinity"
    assert held[1] == held[2]
    assert await take(broker, "w2", SDXL_WARM) == "cold"
    assert await redis.hmget(broker.keys.job("cold"), "held_by", "held_until") == [None, None]


async def test_within_its_bound_a_job_keeps_its_first_pass_over_time(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings, affinity_max_delay=3600.0)
    await submit_cold_then_warm(broker)
    assert await take(broker, "w", SDXL_WARM) == "warm0"
    first = await redis.hmget(broker.keys.job("cold"), "held_since", "held_until")
    assert await take(broker, "w", SDXL_WARM) == "warm1"
    # Passed over again: the clock still runs from the first pass-over, when strict order
    # would have given the job out.
    assert await redis.hmget(broker.keys.job("cold"), "held_since", "held_until") == first
    assert int(first[1] or 0) - int(first[0] or 0) == 3_600_000
