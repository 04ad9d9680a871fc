"""Group commit (shared/group_commit.py) of a worker's complete-and-claim calls
(complete_claim.lua): calls for one worker made while another of its calls is in flight go
together in the next script call, and each is answered exactly as if it had been sent alone:
its own fence, its own next job, in the order the calls were made. And of a process's
submissions: those made while a few are in flight go in one pipeline, each its own call with
its own answer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.broker import Broker, Claim, NoClaim
from shared.group_commit import COMPLETE_IN_FLIGHT
from shared.job import JobStatus
from shared.lua_source import library
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.factories import caps, job
from tests.helpers import stream_fields, wait_until

OFFER = caps()
CAPS = Broker.encode_capabilities(OFFER)


async def script_calls(redis: Redis) -> int:
    """Script calls Redis has run so far (the library loaded first, so that a call that
    found it missing is not counted)."""
    with contextlib.suppress(ResponseError):  # "already exists"
        await redis.function_load(library())
    return script_call_stats(await redis.info("commandstats"))[0]


async def submit(broker: Broker, count: int) -> list[str]:
    return [(await broker.submit(job(payload={"n": i}))).job_id for i in range(count)]


async def hold(broker: Broker, worker_id: str, count: int) -> list[Claim]:
    """`count` jobs claimed by `worker_id`, as a worker with that many slots holds them."""
    held = []
    for _ in range(count):
        claim = await broker.claim(worker_id, OFFER)
        assert isinstance(claim, Claim)
        held.append(claim)
    return held


async def complete_all(
    broker: Broker, worker_id: str, held: list[Claim], tokens: list[str] | None = None
) -> list[tuple[str, Claim | NoClaim]]:
    """Complete every held job at once, as slots finishing together do."""
    tokens = tokens or [c.token for c in held]
    return await asyncio.gather(
        *(
            broker.complete_and_claim(worker_id, c.job.id, token, {"done": c.job.id}, CAPS)
            for c, token in zip(held, tokens, strict=True)
        )
    )


async def test_completions_made_while_calls_are_in_flight_go_together(
    broker: Broker, redis: Redis
) -> None:
    first = await submit(broker, 8)
    then = await submit(broker, 8)
    await broker.register_worker("w", OFFER)
    held = await hold(broker, "w", 8)
    assert [c.job.id for c in held] == first
    before = await script_calls(redis)

    answers = await complete_all(broker, "w", held)

    # The first COMPLETE_IN_FLIGHT calls go at once; the rest, made while those are in
    # flight, wait and go together (how they split depends on which replies arrive together).
    assert COMPLETE_IN_FLIGHT + 1 <= await script_calls(redis) - before < 8
    assert [fence for fence, _ in answers] == ["ok"] * 8
    taken = [c.job.id for _, c in answers if isinstance(c, Claim)]
    assert sorted(taken) == sorted(then)  # each call got its own next job
    for job_id in first:
        done = await broker.get(job_id)
        assert done is not None
        assert done.status == JobStatus.COMPLETED
        assert done.result == {"done": job_id}
    leases = await redis.hkeys(broker.keys.leases("w"))
    assert sorted(as_text(k) for k in leases) == sorted(then)


async def test_one_call_completes_and_claims_for_each_in_order(broker: Broker) -> None:
    """One complete_claim.lua call for five completions: each answered in the order given,
    as five calls one after another would be, the next jobs taken in FIFO order."""
    await submit(broker, 5)
    then = await submit(broker, 5)
    await broker.register_worker("w", OFFER)
    held = await hold(broker, "w", 5)

    answers = await broker._complete_and_claim_group(
        ("w", CAPS, 0), [(c.job.id, c.token, b"1") for c in held]
    )

    assert [fence for fence, _ in answers] == ["ok"] * 5
    assert [c.job.id for _, c in answers if isinstance(c, Claim)] == then


async def test_a_stale_completion_in_a_group_is_refused_alone(broker: Broker) -> None:
    await submit(broker, 4)
    await broker.register_worker("w", OFFER)
    held = await hold(broker, "w", 4)
    tokens = [c.token for c in held]
    tokens[2] = "999999"  # no longer this job's token: its lease was lost and retaken

    answers = await complete_all(broker, "w", held, tokens)

    assert [fence for fence, _ in answers] == ["ok", "ok", "stale", "ok"]
    stale = await broker.get(held[2].job.id)
    assert stale is not None
    assert stale.status == JobStatus.ACTIVE  # still the lease holder's to finish
    for i in (0, 1, 3):
        done = await broker.get(held[i].job.id)
        assert done is not None
        assert done.status == JobStatus.COMPLETED


async def test_once_the_queue_runs_dry_the_rest_of_a_group_is_answered_empty(
    broker: Broker, redis: Redis
) -> None:
    await submit(broker, 8)
    await broker.register_worker("w", OFFER)
    held = await hold(broker, "w", 8)
    left = await submit(broker, 2)

    answers = await complete_all(broker, "w", held)

    assert [fence for fence, _ in answers] == ["ok"] * 8
    nexts = [claim for _, claim in answers]
    assert sorted(c.job.id for c in nexts if isinstance(c, Claim)) == sorted(left)
    assert [c.reason for c in nexts if isinstance(c, NoClaim)] == ["empty"] * 6
    # Nothing else was leased, and the worker waits for work like any worker that found none.
    leased = await redis.hkeys(broker.keys.leases("w"))
    assert sorted(as_text(k) for k in leased) == sorted(left)
    assert await redis.zscore(broker.keys.idle_workers("sim"), "w") is not None
    claimed = [
        e for e in await stream_fields(redis, broker.keys.events) if e[b"type"] == b"claimed"
    ]
    assert len(claimed) == 8 + 2  # the eight held, the two left: no claim answered twice


async def test_a_lone_completion_is_sent_at_once(broker: Broker, redis: Redis) -> None:
    await submit(broker, 3)
    await broker.register_worker("w", OFFER)
    claim = await broker.claim("w", OFFER)
    before = await script_calls(redis)
    while isinstance(claim, Claim):
        fence, claim = await broker.complete_and_claim("w", claim.job.id, claim.token, 1, CAPS)
        assert fence == "ok"
    assert await script_calls(redis) - before == 3
    assert isinstance(claim, NoClaim)
    assert claim.reason == "empty"


async def test_groups_are_per_worker(broker: Broker, redis: Redis) -> None:
    await submit(broker, 4)
    await broker.register_worker("a", OFFER)
    await broker.register_worker("b", OFFER)
    held_a = await hold(broker, "a", 2)
    held_b = await hold(broker, "b", 2)
    await submit(broker, 4)

    answers = await asyncio.gather(
        complete_all(broker, "a", held_a), complete_all(broker, "b", held_b)
    )

    for worker_id, worker_answers in zip("ab", answers, strict=True):
        taken = [c.job.id for _, c in worker_answers if isinstance(c, Claim)]
        assert len(taken) == 2
        leases = await redis.hkeys(broker.keys.leases(worker_id))
        assert sorted(as_text(k) for k in leases) == sorted(taken)


async def test_a_result_rejected_by_validation_fails_only_its_own_call(broker: Broker) -> None:
    await submit(broker, 2)
    await broker.register_worker("w", OFFER)
    held = await hold(broker, "w", 2)
    too_deep: object = []
    for _ in range(100):
        too_deep = [too_deep]

    good, bad = await asyncio.gather(
        broker.complete_and_claim("w", held[0].job.id, held[0].token, 1, CAPS),
        broker.complete_and_claim("w", held[1].job.id, held[1].token, too_deep, CAPS),
        return_exceptions=True,
    )

    assert not isinstance(good, BaseException)
    assert good[0] == "ok"
    assert isinstance(bad, Exception)
    assert "result" in str(bad)
    untouched = await broker.get(held[1].job.id)
    assert untouched is not None
    assert untouched.status == JobStatus.ACTIVE


@pytest.mark.parametrize("slots", [16, 40])
async def test_a_worker_draining_with_many_slots_completes_every_job_once(
    broker: Broker, redis: Redis, slots: int
) -> None:
    """Slots chaining complete-and-claim at once, as the runtime's do: every job is
    completed exactly once, and groups never exceed the cap."""
    ids = await submit(broker, 200)
    await broker.register_worker("w", OFFER)
    done: list[str] = []

    async def slot() -> None:
        claim = await broker.claim("w", OFFER)
        while isinstance(claim, Claim):
            done.append(claim.job.id)
            fence, claim = await broker.complete_and_claim(
                "w", claim.job.id, claim.token, None, CAPS
            )
            assert fence == "ok"

    before = await script_calls(redis)
    await asyncio.gather(*(slot() for _ in range(slots)))

    assert sorted(done) == sorted(ids)
    assert await redis.zcard(broker.keys.finished("completed")) == 200
    # Fewer calls than jobs: completions that met one in flight went together.
    assert await script_calls(redis) - before < 200 + slots


async def test_the_claims_of_a_group_whose_reply_was_lost_go_back_without_penalty(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    """A group's reply lost on the way (the connection dropped after the script ran): its
    completions stand, and the jobs it claimed, unknown to the worker, go back to the queue
    once its heartbeat does not report them (orphan_grace), with no attempt counted."""
    fast = Broker(redis, dataclasses.replace(broker_settings, orphan_grace=0.3))
    await submit(fast, 3)
    await fast.register_worker("w", OFFER)
    held = await hold(fast, "w", 3)
    lost = await submit(fast, 3)
    answers = await complete_all(fast, "w", held)  # the worker never reads these
    assert sorted(c.job.id for _, c in answers if isinstance(c, Claim)) == sorted(lost)

    async def all_back() -> bool:
        await fast.heartbeat("w", running={})
        found = [await fast.get(job_id) for job_id in lost]
        return all(j is not None and j.status == JobStatus.PENDING for j in found)

    await wait_until(all_back, timeout=10, interval=0.05)
    for job_id in lost:
        again = await fast.get(job_id)
        assert again is not None
        assert again.attempts == 0
    for c in held:
        done = await fast.get(c.job.id)
        assert done is not None
        assert done.status == JobStatus.COMPLETED


async def reads_processed(redis: Redis) -> int:
    """Read events Redis has handled so far: a round trip is one, a pipeline that arrives
    together is one for all its commands."""
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_submissions_made_while_a_few_are_in_flight_go_in_one_pipeline(
    broker: Broker, redis: Redis
) -> None:
    # A first round loads the library and opens the connections (each one's handshake is
    # several reads of its own).
    await asyncio.gather(*(broker.submit(job()) for _ in range(80)))
    before_calls, before_reads = await script_calls(redis), await reads_processed(redis)

    answers = await asyncio.gather(*(broker.submit(job(payload={"n": i})) for i in range(80)))

    # Every submission is its own script call with its own job...
    assert await script_calls(redis) - before_calls == 80
    ids = [a.job_id for a in answers]
    assert len(set(ids)) == 80
    assert all(a.created for a in answers)
    stored = await broker.get_many(ids)
    assert [j.payload for j in stored] == [{"n": i} for i in range(80)]
    # ...but far fewer than 80 round trips carried them (the INFO calls count too).
    assert await reads_processed(redis) - before_reads < 40


async def test_a_submission_that_fails_in_a_pipeline_fails_alone(
    broker: Broker, redis: Redis
) -> None:
    await broker.submit(job())
    # An idempotency key whose Redis key holds the wrong type: its script call errors
    # (WRONGTYPE) before writing anything; the calls around it are untouched.
    await redis.hset(broker.keys.idempotency(hashlib.sha256(b"poisoned").hexdigest()), "x", "1")

    async def one(i: int) -> str | Exception:
        key = "poisoned" if i == 10 else None  # beyond the first SUBMIT_IN_FLIGHT: grouped
        try:
            return (await broker.submit(job(payload={"n": i}), idempotency_key=key)).job_id
        except ResponseError as exc:
            return exc

    outcomes = await asyncio.gather(*(one(i) for i in range(12)))

    failed = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    assert failed == [10]
    assert "WRONGTYPE" in str(outcomes[10])
    ids = [o for o in outcomes if isinstance(o, str)]
    assert len(set(ids)) == 11
    assert await broker.pending_count() == 12  # the 11, and the first one
