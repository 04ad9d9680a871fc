"""The Lua scheduling rule inside the claim (shared/lua/include/choose.lua) agrees with the
Python reference (shared/scheduling/chooser.py): the same candidates and context give the
same chosen job, the same policies holding the same jobs, the same overdue flag. And with
policies on, the peek still names the job the claim takes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.broker_replies import Head
from shared.keys import Keys
from shared.lua_source import source
from shared.scheduling.chooser import Candidate, Context, choose
from shared.scheduling.policies import POLICY_NAMES, claim_argument
from shared.settings import BrokerSettings
from tests.factories import caps, job

NOW = 1_700_000_000_000
CUSTOMERS = ["", "acme", "beta", "gamma"]
PRIORITY_UNIT = 8796093022208  # submit_job.lua's score: (1000 - priority) * 2^43 + seq


# One candidate's fields but its sequence number, drawn as one tuple: the same values as
# drawing each field on its own, at about half the cost (Hypothesis spends far more per draw
# than Redis spends per case, so generation was most of this test's time).
candidate_fields = st.tuples(
    st.integers(40, 60),  # priority
    st.one_of(st.none(), st.integers(NOW - 5_000, NOW + 5_000)),  # held until
    st.sampled_from(CUSTOMERS),
    st.booleans(),  # warm
    st.one_of(st.none(), st.sampled_from(["small-1", "small-2"])),  # fit blocker
)


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[Candidate]:
    count = draw(st.integers(0, 12))
    seqs = draw(st.lists(st.integers(1, 10**6), min_size=count, max_size=count, unique=True))
    fields = draw(st.lists(candidate_fields, min_size=count, max_size=count))
    return [
        Candidate(
            job=f"j{i}",
            score=(1000 - priority) * PRIORITY_UNIT + seq,
            priority=priority,
            customer=customer,
            warm=warm,
            fit_blocker=fit_blocker,
            held_until=held,
        )
        for i, (seq, (priority, held, customer, warm, fit_blocker)) in enumerate(
            zip(seqs, fields, strict=True)
        )
    ]


loads = st.dictionaries(
    st.sampled_from(CUSTOMERS),
    st.one_of(st.sampled_from([0.0, 1.0, 2.5]), st.floats(0, 1e6, allow_nan=False)),
)


@pytest.fixture
def choose_script(redis_url: str) -> Iterator[Any]:
    client = SyncRedis.from_url(redis_url)
    script = client.register_script(source("choose_eval"))
    yield lambda *args: script(keys=[Keys().pending], args=["", 1000, 1000, *args])
    client.close()


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    candidates=candidate_lists(),
    policies=st.lists(st.sampled_from(POLICY_NAMES), unique=True),
    window=st.integers(0, 15),
    customer_loads=loads,
)
def test_lua_chooser_agrees_with_python(
    choose_script: Any,
    candidates: list[Candidate],
    policies: list[str],
    window: int,
    customer_loads: dict[str, float],
) -> None:
    ordered = tuple(p for p in POLICY_NAMES if p in policies)
    expected = choose(candidates, Context(frozenset(ordered), window, NOW, customer_loads))
    argument = (
        claim_argument(
            ordered, window=window, affinity_max_delay=30, fit_max_delay=10, half_life=300
        )
        or f"|{window}|0|0|0"
    )
    reply = choose_script(
        orjson.dumps([dataclasses.asdict(c) for c in candidates]),
        argument,
        NOW,
        orjson.dumps(customer_loads),
    )
    if expected is None:
        assert reply == []
        return
    event(f"held={sorted(set(expected.held.values()))} overdue={expected.overdue}")
    chosen, held, overdue = reply
    assert (chosen.decode(), orjson.loads(held), overdue == 1) == (
        "" if expected.nothing_taken else expected.chosen.job,
        expected.held,
        expected.overdue,
    ), (candidates, ordered, window, customer_loads)


queued_jobs = st.lists(
    st.tuples(
        st.sampled_from([40, 48, 50, 55]),
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.sampled_from(["m1", "m2", "m3"]), max_size=2, unique=True),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    jobs=queued_jobs,
    policies=st.lists(st.sampled_from(["affinity", "fair"]), unique=True, min_size=1),
    warm_models=st.lists(st.sampled_from(["m1", "m2", "m3"]), unique=True),
    window=st.integers(0, 12),
)
def test_peek_names_the_job_the_claim_takes_under_policies(
    redis_url: str,
    jobs: list[tuple[int, str, list[str]]],
    policies: list[str],
    warm_models: list[str],
    window: int,
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            settings = replace(
                BrokerSettings(), scheduling_policies=tuple(policies), affinity_window=window
            )
            broker = Broker(client, settings)
            await broker.submit_many(
                [job(priority=p, customer_id=c, requirements={"models": m}) for p, c, m in jobs]
            )
            offer = caps(models=["m1", "m2", "m3"], warm_models=warm_models)
            encoded = Broker.encode_capabilities(offer)
            for _ in range(len(jobs)):
                head = await broker.peek("w", encoded)
                taken = await broker.claim("w", encoded)
                assert isinstance(head, Head)
                assert isinstance(taken, Claim)
                assert head.job_id == taken.job.id
                await broker.complete("w", taken.job.id, taken.token, None)
        finally:
            await client.aclose()

    asyncio.run(scenario())
