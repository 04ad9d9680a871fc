"""What a claim's scan reads, and what it may skip (shared/lua/include/find_job.lua).

The verdict memo: per capability document (its JSON's SHA-1), whether it can run each class
it scanned, leases aside. A claim reads a class's document only where the memo has no '0',
and adds the verdicts it computed. A peek reads the memo and writes nothing.

The lean scan: with scheduling policies on but none able to choose other than strict order,
an index's classes after its first match are not read; where the worker avoids that match's
jobs, the scan is made again in full, so it still takes the next job strict order would.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.text import as_text
from tests.factories import caps, gpu, job
from tests.helpers import wait_until

SMALL = caps(hardware={"gpus": [gpu(24)]})
BIG_JOB = {"hardware": {"gpu": {"memory_gb": 80}}}


def memo_key(broker: Broker, offer: Capabilities) -> str:
    """The memo of `offer`: the digest of its JSON with free GPU memory and warm models
    blanked (include/matching.lua matched_part; these tests' model names need no escaping)."""
    text = Broker.encode_capabilities(offer).decode()
    text = re.sub(r'"memory_free_gb":[^,}]*', '"memory_free_gb":', text)
    text = re.sub(r'"warm_models":\[[^\]]*\]', '"warm_models":[]', text)
    return broker.keys.verdicts(hashlib.sha1(text.encode()).hexdigest())


async def memo_keys(redis: Redis, broker: Broker) -> list[str]:
    return sorted(as_text(k) for k in await redis.keys(broker.keys.verdicts("*")))


async def class_of(redis: Redis, broker: Broker, job_id: str) -> str:
    return as_text(await redis.hget(broker.keys.job(job_id), "class_id"))


async def memo(redis: Redis, broker: Broker, offer: Capabilities) -> dict[str, str]:
    raw = await redis.hgetall(memo_key(broker, offer))
    return {as_text(k): as_text(v) for k, v in raw.items()}


async def test_a_claim_remembers_which_classes_the_worker_can_run(
    broker: Broker, redis: Redis
) -> None:
    await broker.submit(job(id="big", priority=90, requirements=BIG_JOB))
    await broker.submit(job(id="small", priority=10))
    claim = await broker.claim("w", SMALL)
    assert isinstance(claim, Claim)
    assert claim.job.id == "small"
    big, small = await class_of(redis, broker, "big"), await class_of(redis, broker, "small")
    assert await memo(redis, broker, SMALL) == {big: "0", small: "1"}
    assert 0 < await redis.ttl(memo_key(broker, SMALL)) <= 600


async def test_a_worker_keeps_its_memo_while_its_gpus_fill_and_its_models_load(
    broker: Broker, redis: Redis
) -> None:
    await broker.submit_many(
        [job(id=f"big{i}", priority=90, requirements=BIG_JOB) for i in range(2)]
    )
    await broker.submit_many([job(id=f"j{i}", priority=10) for i in range(3)])
    card = {**gpu(24), "memory_free_gb": 20.5}
    running = [
        caps(hardware={"gpus": [card]}),
        caps(hardware={"gpus": [{**card, "memory_free_gb": 3.25}]}, warm_models=["sdxl"]),
        caps(hardware={"gpus": [{**card, "memory_free_gb": 7.0}]}, warm_models=['a "]', "b"]),
    ]
    for offer in running:
        assert isinstance(await broker.claim("w", offer), Claim)
    assert await memo_keys(redis, broker) == [memo_key(broker, running[0])]
    # A bigger card matches other classes: another memo.
    await broker.submit(job(id="more", priority=10))
    assert isinstance(await broker.claim("w", caps(hardware={"gpus": [gpu(80)]})), Claim)
    assert len(await memo_keys(redis, broker)) == 2


async def test_a_class_the_memo_rules_out_is_passed_over_unread(
    broker: Broker, redis: Redis
) -> None:
    await broker.submit(job(id="first", priority=50))
    await broker.submit(job(id="next", priority=10, requirements={"hardware": {"gpu": {}}}))
    await redis.hset(memo_key(broker, SMALL), await class_of(redis, broker, "first"), "0")
    claim = await broker.claim("w", SMALL)
    assert isinstance(claim, Claim)
    assert claim.job.id == "next"
    # Other capabilities have their own memo.
    other = caps(hardware={"gpus": [gpu(48)]})
    claim = await broker.claim("w", other)
    assert isinstance(claim, Claim)
    assert claim.job.id == "first"


async def test_the_memo_holds_verdicts_leases_aside(broker: Broker, redis: Redis) -> None:
    loose = {"customer_isolation": "loose"}
    await broker.submit(job(id="a", customer_id="acme", priority=90))
    await broker.submit(job(id="b", customer_id="bolt", priority=10, requirements=loose))
    await broker.submit(job(id="big", priority=5, requirements=BIG_JOB))
    held = await broker.claim("w", SMALL)
    assert isinstance(held, Claim)
    assert held.job.id == "a"
    # bolt's job wants its worker to run no other customer's job meanwhile: it waits...
    assert await broker.claim("w", SMALL) == NoClaim("empty", None)
    # ...but the memo says the worker can run it, which it can once the lease ends.
    assert (await memo(redis, broker, SMALL))[await class_of(redis, broker, "b")] == "1"
    assert await broker.complete("w", "a", held.token, None) == "ok"
    claim = await broker.claim("w", SMALL)
    assert isinstance(claim, Claim)
    assert claim.job.id == "b"


async def test_an_index_of_one_class_is_judged_without_the_memo(
    broker: Broker, redis: Redis
) -> None:
    # A call to the memo would spare one decode at most: not worth it (a drain of one kind
    # of job claims from an index of one class every time).
    await broker.submit(job(id="j"))
    await redis.hset(memo_key(broker, SMALL), await class_of(redis, broker, "j"), "0")
    claim = await broker.claim("w", SMALL)
    assert isinstance(claim, Claim)
    assert claim.job.id == "j"


async def test_a_peek_reads_the_memo_and_writes_none(broker: Broker, redis: Redis) -> None:
    await broker.submit(job(id="big", priority=90, requirements=BIG_JOB))
    await broker.submit(job(id="small", priority=10))
    encoded = Broker.encode_capabilities(SMALL)
    for policies in [(), ("fit", "affinity", "fair")]:
        peeking = Broker(redis, replace(broker.settings, scheduling_policies=policies))
        head = await peeking.peek("w", encoded)
        assert not isinstance(head, NoClaim)
        assert head.job_id == "small"
        assert await redis.exists(memo_key(broker, SMALL)) == 0
    await redis.hset(memo_key(broker, SMALL), "x", "0")  # the memo exists: it is read
    ruled_out = await class_of(redis, broker, "small")
    await redis.hset(memo_key(broker, SMALL), ruled_out, "0")
    assert await broker.peek("w", encoded) == NoClaim("empty", None)


def with_all_policies(broker: Broker) -> Broker:
    return Broker(
        broker.redis, replace(broker.settings, scheduling_policies=("fit", "affinity", "fair"))
    )


async def _retry_due(broker: Broker, redis: Redis) -> bool:
    await broker.reap()  # promotes retries whose backoff has elapsed
    return await redis.zcard(broker.keys.delayed) == 0


async def test_with_policies_on_a_worker_avoiding_its_best_class_takes_the_next(
    broker: Broker, redis: Redis
) -> None:
    scheduled = with_all_policies(broker)
    # Three classes of one customer, no warm models, no idle worker: no policy can differ
    # from strict order, and the scan stops at the first matching class.
    await scheduled.submit(job(id="first", priority=50, max_retries=3))
    await scheduled.submit(job(id="second", priority=40, requirements={"models": ["m"]}))
    await scheduled.submit(job(id="third", priority=30, requirements={"models": ["n"]}))
    offer = caps(models=["m", "n"])
    claim = await scheduled.claim("w1", offer)
    assert isinstance(claim, Claim)
    assert claim.job.id == "first"
    assert await scheduled.fail("w1", "first", claim.token, "flaky") == "retrying"
    await wait_until(lambda: _retry_due(scheduled, redis), timeout=5)
    # w1 avoids the job it just failed: the next job in strict order is its.
    claim = await scheduled.claim("w1", offer)
    assert isinstance(claim, Claim)
    assert claim.job.id == "second"


async def test_an_idle_worker_polling_with_the_same_capabilities_writes_nothing(
    broker: Broker, redis: Redis
) -> None:
    await broker.register_worker("w", SMALL)
    assert await broker.claim("w", SMALL) == NoClaim("empty", None)
    idle = await redis.zrange(broker.keys.idle_workers("sim"), 0, -1, withscores=True)
    await redis.config_resetstat()
    assert await broker.claim("w", SMALL) == NoClaim("empty", None)
    writes = await redis.info("commandstats")
    assert not {"cmdstat_zadd", "cmdstat_hset", "cmdstat_zrem"} & set(writes)
    assert await redis.zrange(broker.keys.idle_workers("sim"), 0, -1, withscores=True) == idle
    # New capabilities (a bigger GPU) are indexed at once.
    bigger = caps(hardware={"gpus": [gpu(48)]})
    assert await broker.claim("w", bigger) == NoClaim("empty", None)
    score = await redis.zscore(broker.keys.idle_workers("sim"), "w")
    assert score == 480 * 1_000_000
    assert as_text(await redis.hget(broker.keys.worker("w"), "idle_caps")) == as_text(
        Broker.encode_capabilities(bigger)
    )


async def test_an_idle_worker_that_stops_accepting_handoffs_is_indexed_so(
    broker: Broker, redis: Redis
) -> None:
    accepting = Broker(redis, broker.settings, handoff=True)
    await accepting.register_worker("w", SMALL)
    assert await accepting.claim("w", SMALL) == NoClaim("empty", None)
    assert await redis.hget(broker.keys.worker("w"), "idle_handoff") == b"1"
    await redis.config_resetstat()
    assert await accepting.claim("w", SMALL) == NoClaim("empty", None)
    assert "cmdstat_hset" not in await redis.info("commandstats")
    # The same capabilities, but no longer accepting handoffs: the mark goes.
    assert await broker.claim("w", SMALL) == NoClaim("empty", None)
    assert await redis.hget(broker.keys.worker("w"), "idle_handoff") is None


async def test_a_warm_worker_woken_for_a_job_it_lost_is_indexed_warm_again(
    broker: Broker, redis: Redis
) -> None:
    warm = caps(hardware={"gpus": [gpu(24)]}, models=["sdxl"], warm_models=["sdxl"])
    affine = Broker(redis, replace(broker.settings, scheduling_policies=("affinity",)))
    warm_index = affine.keys.warm_idle("sim", "sdxl")
    await affine.register_worker("warm", warm)
    assert await affine.claim("warm", warm) == NoClaim("empty", None)
    assert await redis.zrange(warm_index, 0, -1) == [b"warm"]
    # The job wakes it and takes it out of the warm index; another worker takes the job.
    await affine.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await redis.zrange(warm_index, 0, -1) == []
    other = await affine.claim("other", warm)
    assert isinstance(other, Claim)
    # Its claim, with the same capabilities, finds nothing: it is warm and idle again.
    assert await affine.claim("warm", warm) == NoClaim("empty", None)
    assert await redis.zrange(warm_index, 0, -1) == [b"warm"]
