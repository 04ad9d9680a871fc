"""Affinity in the claim (SCHEDULING_POLICIES=affinity): a worker prefers the jobs whose
models are warm on it, within AFFINITY_PRIORITY_WINDOW points of the best match, and a job
passed over is taken once AFFINITY_MAX_DELAY_SECONDS ran out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.broker_replies import Head
from shared.capabilities import Capabilities
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import wait_until

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
    # The claim clears the held_* fields but its 'claimed' event keeps how long the policy
    # held the job: from the first pass-over to the claim, and to the last pass-over.
    claimed_at = int(await redis.hget(broker.keys.job("cold"), "claimed_at") or 0)
    cold = await claimed_event(redis, broker, "cold")
    assert cold["held_by"] == "affinity"
    assert cold["held_ms"] == claimed_at - int(held[1] or 0)
    assert cold["passed_over_ms"] == 0
    assert set(await claimed_event(redis, broker, "warm0")) == {"worker_id", "wait_ms"}


async def claimed_event(redis: Redis, broker: Broker, job_id: str) -> dict[str, Any]:
    """The data of `job_id`'s 'claimed' event."""
    entries: list[Any] = await redis.xrange(broker.keys.events) or []
    for _, fields in entries:
        if fields.get(b"job") == job_id.encode() and fields[b"type"] == b"claimed":
            data: dict[str, Any] = orjson.loads(fields[b"data"])
            return data
    raise AssertionError(f"no claimed event for {job_id}")


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


async def test_warm_work_arriving_all_the_time_delays_a_cold_job_only_until_its_bound(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings, affinity_max_delay=0.2)
    await broker.submit(job(id="cold", priority=50, requirements={"models": ["flux"]}))
    claimed_at: dict[str, int] = {}

    async def next_claim() -> str | None:
        n = len(claimed_at)
        await broker.submit(job(id=f"warm{n}", priority=50, requirements={"models": ["sdxl"]}))
        claim = await broker.claim("w", SDXL_WARM)
        assert isinstance(claim, Claim)
        claimed_at[claim.job.id] = claim.job.claimed_at or 0
        await broker.complete("w", claim.job.id, claim.token, None)
        return claim.job.id if claim.job.id == "cold" else None

    held = await redis.hmget(broker.keys.job("cold"), "held_until")
    assert held == [None]
    await wait_until(next_claim, message="the cold job claimed")
    # The first claim passed it over and started its clock; every claim before its bound
    # ran out took warm work, and the first claim at or after it took the cold job.
    first = min(claimed_at.values())
    deadline = first + 200
    assert all(at < deadline for job_id, at in claimed_at.items() if job_id != "cold")
    assert claimed_at["cold"] >= deadline
    assert len(claimed_at) >= 2


@pytest.mark.parametrize(("scan", "first"), [(3, "c0"), (4, "warm")])
async def test_a_claim_examines_at_most_scheduling_scan_classes_beyond_strict_order(
    redis: Redis, broker_settings: BrokerSettings, scan: int, first: str
) -> None:
    settings = replace(
        broker_settings, scheduling_policies=("affinity",), scheduling_scan_classes=scan
    )
    broker = Broker(redis, settings)
    models = ["m0", "m1", "m2", "m3"]
    for i, model in enumerate(models):  # four cold classes, the first found by strict order
        await broker.submit(job(id=f"c{i}", requirements={"models": [model]}))
    await broker.submit(job(id="warm", requirements={"models": ["sdxl"]}))
    offer = caps(models=[*models, "sdxl"], warm_models=["sdxl"])
    taken = await broker.claim("w", offer)
    assert isinstance(taken, Claim)
    assert taken.job.id == first


async def test_a_peek_writes_nothing_and_a_claim_tidies_holds_no_longer_pending(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = affinity_broker(redis, broker_settings, affinity_max_delay=0.0)
    await submit_cold_then_warm(broker)
    assert await take(broker, "w", SDXL_WARM) == "warm0"  # "cold" is held, its bound 0
    assert (await broker.cancel("cold")).outcome == "cancelled"
    assert await redis.zscore(broker.keys.held, "cold") is not None
    await broker.peek("w", Broker.encode_capabilities(SDXL_WARM))
    assert await redis.zscore(broker.keys.held, "cold") is not None
    assert await take(broker, "w", SDXL_WARM) == "warm1"
    assert await redis.zscore(broker.keys.held, "cold") is None


async def test_models_a_payload_names_count_as_the_jobs_models(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    """A job without requirements.models is warm by the models its payload names (its
    preferred models, the class document's p), and the worker needs none of them loaded."""
    broker = affinity_broker(redis, broker_settings)
    await broker.submit(job(id="cold", payload={"models": ["flux"]}))
    await broker.submit(job(id="warm", payload={"models": ["sdxl"]}))
    offer = caps(warm_models=["sdxl"])  # it offers no models at all: preferences only
    assert await drain(broker, "w", offer) == ["warm", "cold"]
