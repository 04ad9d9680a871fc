"""peek.lua names the job claim.lua takes: on random queues (priorities, requirement
classes, customers and isolation, leases held here and in other pools, retries due and
avoided, a scan budget small enough to need continuing), step by step until the queue is
empty, the job a peek names is the job the next claim takes, and neither finds one when the
other does not. A worker serving several pools chooses a pool by the peek; this is what
makes the peek a promise about the claim."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from shared.broker import Broker, Claim, Head, NoClaim
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import wait_until

SHAPES: list[dict[str, Any]] = [
    {},
    {"models": ["m"]},
    {"hardware": {"cpu_cores": 8}},
    {"customer_isolation": "loose"},
]
CUSTOMERS = ["", "acme", "beta"]

jobs = st.lists(
    st.tuples(
        st.sampled_from([1, 50, 90]),
        st.sampled_from(range(len(SHAPES))),
        st.sampled_from(CUSTOMERS),
    ),
    max_size=12,
)
offers = st.builds(
    lambda models, cores, isolation: caps(
        models=models,
        hardware={"cpu_cores": cores},
        customer_access={"isolation": isolation, "allowed_customers": ["acme"]}
        if isolation == "strict"
        else {"isolation": isolation},
    ),
    st.sampled_from([[], ["m"]]),
    st.sampled_from([4, 16]),
    st.sampled_from(["none", "loose", "strict"]),
)
elsewhere = st.lists(
    st.tuples(st.sampled_from(["acme", "beta"]), st.sampled_from(["none", "loose"])), max_size=1
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    queue=jobs,
    offer=offers,
    held=st.integers(0, 2),
    failed_here=st.integers(0, 2),
    failed_elsewhere=st.integers(0, 2),
    others=elsewhere,
    small_budget=st.booleans(),
)
def test_peek_names_the_job_the_claim_takes(
    redis_url: str,
    broker_settings: BrokerSettings,
    queue: list[tuple[int, int, str]],
    offer: Any,
    held: int,
    failed_here: int,
    failed_elsewhere: int,
    others: list[tuple[str, str]],
    small_budget: bool,
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            # Retries are due within 4 ms, but avoided by the worker that failed them for long;
            # a budget of 2 classes per call makes the scans continue ('more'). (Due retries
            # with a truncated scan are not compared: there the claim's order is approximate
            # by its contract, claim.lua's header.)
            budget = 2 if small_budget and not (failed_here or failed_elsewhere) else 64
            settings_ = dataclasses.replace(
                broker_settings,
                retry_backoff_base=0.004,
                retry_backoff_cap=0.004,
                avoid_window=60.0,
                claim_scan_budget=budget,
            )
            broker = Broker(client, settings_)
            anyone = caps(models=["m"], hardware={"cpu_cores": 16})
            await broker.submit_many(
                [
                    job(id=f"j{n}", priority=p, customer_id=customer(c, s), requirements=SHAPES[s])
                    for n, (p, s, c) in enumerate(queue)
                ]
            )
            await broker.register_worker("w", offer)
            for _ in range(held):  # leases held here: customer isolation counts them
                await broker.claim("w", offer, elsewhere=others)
            # Retries: every claim first, then every failure, so that no claim moves a due
            # retry into its class before the peek has to judge it where it waits.
            failing = []
            for worker, count in (("w", failed_here), ("v", failed_elsewhere)):
                for _ in range(count):
                    taken = await broker.claim(worker, anyone)
                    if isinstance(taken, Claim):
                        failing.append((worker, taken))
            for worker, taken in failing:
                await broker.fail(worker, taken.job.id, taken.token, "again")
            event(f"retries waiting: {await client.zcard(broker.keys.delayed)}")
            await wait_until(lambda: all_due(client, broker), message="every retry is due")

            encoded = Broker.encode_capabilities(offer)
            steps = 0
            while True:
                named = await broker.peek("w", encoded, elsewhere=others)
                taken = await broker.claim("w", encoded, elsewhere=others)
                if isinstance(named, Head):
                    assert isinstance(taken, Claim), (named, taken)
                    assert taken.job.id == named.job_id
                    assert (taken.job.effective_priority, taken.job.created_at) == (
                        named.rank.priority,
                        named.rank.created_at,
                    )
                    assert await broker.complete("w", taken.job.id, taken.token, None) == "ok"
                    steps += 1
                    continue
                assert isinstance(named, NoClaim)
                assert isinstance(taken, NoClaim), (named, taken)
                assert (named.reason, named.next_due_ms) == (taken.reason, taken.next_due_ms)
                event(f"claims compared: {min(steps, 3)}{'+' if steps > 3 else ''}")
                return
        finally:
            await client.aclose()

    asyncio.run(scenario())


def customer(chosen: str, shape: int) -> str | None:
    """The job's customer: isolation needs one."""
    if "customer_isolation" in SHAPES[shape]:
        return chosen or "acme"
    return chosen or None


async def all_due(client: Redis, broker: Broker) -> bool:
    seconds, micros = await client.time()
    now = seconds * 1000 + micros // 1000
    return await client.zcount(broker.keys.delayed, f"({now}", "+inf") == 0
