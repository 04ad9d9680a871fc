"""Weighted fair share in the claim (SCHEDULING_POLICIES=fair): among the matching jobs in
the priority window, the customer with the lowest decayed GPU-seconds per weight goes
first; a customer alone gets every worker."""

from __future__ import annotations

from dataclasses import replace

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.scheduling.usage import Usage
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import wait_until

OFFER = caps()

# What a second of decay leaves of a usage charged with the tests' 300 s half-life.
DECAY_1S = 2 ** (-1 / 300)


def fair_broker(redis: Redis, settings: BrokerSettings) -> Broker:
    return Broker(redis, replace(settings, scheduling_policies=("fair",)))


async def ran_for(broker: Broker, claim: Claim, ms: int) -> None:
    """Wait until `claim`'s job has run `ms` by Redis's clock (the clock usage is charged by)."""
    claimed = claim.job.claimed_at or 0

    async def elapsed() -> bool:
        return await broker.reads.now_ms() >= claimed + ms

    await wait_until(elapsed, message=f"{ms} ms of Redis time since the claim")


async def run(broker: Broker, worker: str, offer: Capabilities, *, for_ms: int = 0) -> str | None:
    """Claim a job, hold it for `for_ms` of Redis time (the GPU-seconds fair share counts),
    complete it; its id, or None when nothing was claimable."""
    claim = await broker.claim(worker, offer)
    if not isinstance(claim, Claim):
        return None
    await ran_for(broker, claim, for_ms)
    assert await broker.complete(worker, claim.job.id, claim.token, None) == "ok"
    return claim.job.id


async def drain(broker: Broker) -> list[str]:
    out = []
    while (taken := await run(broker, "w", OFFER)) is not None:
        out.append(taken)
    return out


async def burst(broker: Broker) -> None:
    """A heavy customer's burst, then a light customer's few jobs, all one priority."""
    await broker.submit_many([job(id=f"h{i}", customer_id="heavy") for i in range(5)])
    await broker.submit_many([job(id=f"l{i}", customer_id="light") for i in range(3)])


async def test_without_fair_share_a_burst_goes_first(broker: Broker) -> None:
    await burst(broker)
    assert await drain(broker) == ["h0", "h1", "h2", "h3", "h4", "l0", "l1", "l2"]


async def test_a_waiting_customer_goes_before_a_burst_that_used_the_gpus(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fair_broker(redis, broker_settings)
    await burst(broker)
    # Nobody has used anything: strict order, the burst's first job. It runs 300 ms.
    assert await run(broker, "w", OFFER, for_ms=300) == "h0"
    # Light's short jobs now go first while it has any; then heavy, alone, takes them all.
    assert await drain(broker) == ["l0", "l1", "l2", "h1", "h2", "h3", "h4"]
    shares = {s.customer: s for s in await broker.reads.fair.shares(300)}
    # Usage decays from the moment it is charged (half-life 300 s): a read a second later
    # holds 2^(-1/300) of it, so "at least" allows that much.
    assert shares["heavy"].usage >= 0.3 * DECAY_1S > shares["light"].usage
    assert shares["heavy"].share > 0.5 > shares["light"].share


async def test_a_customer_weighing_more_may_use_more(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fair_broker(redis, broker_settings)
    await broker.publish_policy("test-hub", {"heavy": 10, "*": 1})
    await broker.submit(job(id="h0", customer_id="heavy"))
    assert await run(broker, "w", OFFER, for_ms=300) == "h0"  # 0.3 GPU-s / 10
    await broker.submit(job(id="l0", customer_id="light"))
    assert await run(broker, "w", OFFER, for_ms=100) == "l0"  # 0.1 GPU-s / 1
    await broker.submit(job(id="l1", customer_id="light"))
    await broker.submit(job(id="h1", customer_id="heavy"))
    # Heavy used three times as much but weighs ten times as much: its load is lower.
    assert await drain(broker) == ["h1", "l1"]
    weights = {s.customer: s.weight for s in await broker.reads.fair.shares(300)}
    assert weights == {"heavy": 10.0, "light": 1.0}


async def test_fair_share_stays_within_the_priority_window(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = Broker(
        redis, replace(broker_settings, scheduling_policies=("fair",), affinity_window=5)
    )
    await broker.submit(job(id="h0", customer_id="heavy", priority=60))
    assert await run(broker, "w", OFFER, for_ms=100) == "h0"
    await broker.submit(job(id="h1", customer_id="heavy", priority=60))
    await broker.submit(job(id="l-out", customer_id="light", priority=54))  # 6 below
    await broker.submit(job(id="l-in", customer_id="light", priority=55))  # 5 below
    assert await drain(broker) == ["l-in", "h1", "l-out"]


async def test_a_lease_given_back_is_charged_too(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fair_broker(redis, broker_settings)
    await broker.submit(
        job(id="j", customer_id="acme", requirements={"hardware": {"gpu": {"count": 2}}})
    )
    claim = await broker.claim("w", caps(hardware={"gpus": [{"memory_gb": 24}] * 2}))
    assert isinstance(claim, Claim)
    await ran_for(broker, claim, 100)
    assert await broker.release("w", "j", claim.token) == "ok"
    (acme,) = await broker.reads.fair.shares(300)
    assert acme.customer == "acme"
    assert acme.usage >= 0.2 * DECAY_1S  # two GPUs for at least 100 ms, read within 1 s


@pytest.mark.parametrize(("older_usage", "first"), [(10.0, "a0"), (14.0, "b0")])
async def test_usage_decays_by_half_every_half_life(
    redis: Redis, broker_settings: BrokerSettings, older_usage: float, first: str
) -> None:
    """Customer a's usage was recorded one half-life ago, b's now: the claim weighs a's at
    half (the same arithmetic as shared/scheduling/usage.py)."""
    broker = fair_broker(redis, broker_settings)  # half-life 300 s
    now = await broker.reads.now_ms()
    await redis.hset(
        broker.keys.fair_usage,
        mapping={"a": f"{older_usage}|{now - 300_000}", "b": f"6|{now}"},
    )
    assert Usage(older_usage, now - 300_000).at(now, 300_000) == older_usage / 2
    await broker.submit(job(id="a0", customer_id="a"))
    await broker.submit(job(id="b0", customer_id="b"))
    assert await drain(broker) == [first, "b0" if first == "a0" else "a0"]
