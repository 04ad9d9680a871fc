"""A worker serving several pools (worker/pooled_broker.py), against a real Redis.

It claims across its pools by rank (effective priority, then submission time), never taking
a job while another pool's head it could run ranked higher at its last look; a lost race
falls to the next pool. It is registered, alive and paused in every pool; reports and
cancels go to the job's own pool; a submission to any pool wakes it; peek.lua writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.broker import Broker, Claim, Head, NoClaim, Rank
from shared.control_channel import ControlSubscription
from shared.job import Job, JobRequest, JobStatus
from shared.pool_set import PoolSet
from shared.pools import pool_of
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import wait_until
from tests.ports import free_port
from tests.worker_support import finished, running_worker, sim, worker_settings
from worker.links import RedisLink
from worker.pooled_broker import PooledBroker

POOLS = ("gpu-eu", "gpu-us", "default")
OFFER = caps()
CAPS = Broker.encode_capabilities(OFFER)


@pytest.fixture
def settings(broker_settings: BrokerSettings) -> BrokerSettings:
    return dataclasses.replace(broker_settings, pools=POOLS)


@pytest.fixture
def pools(redis: Redis, settings: BrokerSettings) -> PoolSet:
    """The pools as the hub sees them: where tests submit, and what they check."""
    return PoolSet(redis, settings)


@pytest.fixture
def worker(redis: Redis, settings: BrokerSettings) -> PooledBroker:
    return PooledBroker(PoolSet(redis, settings))


def rank(job: Job) -> Rank:
    return Rank.of(job.effective_priority, job.created_at)


async def submit(pools: PoolSet, name: str, request: JobRequest) -> str:
    return (await pool(pools, name).submit(request)).job_id


async def drain(worker: PooledBroker, *, chained: bool = False) -> list[str]:
    """Claim and complete until nothing is left: with `chained`, each completion claims the
    next job (complete_and_claim), as the worker runtime does."""
    ids: list[str] = []
    claim = await worker.claim("w", CAPS)
    while isinstance(claim, Claim):
        ids.append(claim.job.id)
        if chained:
            fence, claim = await worker.complete_and_claim(
                "w", claim.job.id, claim.token, None, CAPS
            )
        else:
            fence = await worker.complete("w", claim.job.id, claim.token, None)
            claim = await worker.claim("w", CAPS)
        assert fence == "ok"
    return ids


def pool(pools: PoolSet, name: str) -> Broker:
    broker = pools.get(name)
    assert broker is not None, name
    return broker


async def stored(pools: PoolSet, job_id: str) -> Job:
    broker = pools.for_job(job_id)
    assert broker is not None
    found = await broker.get(job_id)
    assert found is not None
    return found


async def global_order(pools: PoolSet, ids: list[str]) -> list[str]:
    """The claim order across pools: rank, then the order POOLS lists the pools in (a tie
    in the same millisecond), then each pool's own FIFO (submission order)."""
    jobs = {i: await stored(pools, i) for i in ids}
    order = list(pools.names)
    return sorted(ids, key=lambda i: (rank(jobs[i]), order.index(pool_of(i)), ids.index(i)))


# -- order across pools --------------------------------------------------------------------


@pytest.mark.parametrize("chained", [False, True], ids=["claim", "complete_and_claim"])
async def test_claims_across_pools_follow_priority_then_age(
    pools: PoolSet, worker: PooledBroker, chained: bool
) -> None:
    await worker.register_worker("w", OFFER)
    ids = []
    for n, (name, priority) in enumerate(
        [("gpu-us", 10), ("gpu-eu", 50), ("default", 50), ("gpu-us", 90), ("gpu-eu", 10)] * 3
    ):
        ids.append(await submit(pools, name, job(id=f"j{n:02}", priority=priority)))
    claimed = await drain(worker, chained=chained)
    assert claimed == await global_order(pools, ids)
    # Priority first, whatever the pool: every 90 before any 50 before any 10.
    priorities = [(await stored(pools, i)).priority for i in claimed]
    assert priorities == sorted(priorities, reverse=True)


async def test_the_older_job_wins_between_pools_at_equal_priority(
    pools: PoolSet, worker: PooledBroker, redis: Redis
) -> None:
    await worker.register_worker("w", OFFER)
    first = await submit(pools, "gpu-us", job(id="first"))
    await wait_until(lambda: later_ms(redis, pools, first), message="the clock moves on")
    second = await submit(pools, "gpu-eu", job(id="second"))
    assert await drain(worker) == [first, second]


async def later_ms(redis: Redis, pools: PoolSet, job_id: str) -> bool:
    """Whether Redis's clock is past the millisecond `job_id` was submitted in."""
    submitted = (await stored(pools, job_id)).created_at
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000 > submitted


async def test_a_pool_with_only_low_priority_work_is_served_once_the_better_pool_is_empty(
    pools: PoolSet, worker: PooledBroker
) -> None:
    await worker.register_worker("w", OFFER)
    high = [await submit(pools, "gpu-eu", job(id=f"h{n}", priority=90)) for n in range(3)]
    low = [await submit(pools, "gpu-us", job(id=f"l{n}", priority=1)) for n in range(2)]
    assert await drain(worker, chained=True) == high + low


async def test_a_pool_whose_jobs_this_worker_cannot_run_does_not_block_the_others(
    pools: PoolSet, worker: PooledBroker
) -> None:
    await worker.register_worker("w", OFFER)
    await submit(
        pools,
        "gpu-eu",
        job(id="big", priority=100, requirements={"hardware": {"gpu": {"memory_gb": 80}}}),
    )
    small = await submit(pools, "gpu-us", job(id="small", priority=1))
    assert await drain(worker) == [small]


async def test_nothing_to_claim_says_when_the_earliest_retry_of_any_pool_is_due(
    pools: PoolSet, worker: PooledBroker, settings: BrokerSettings, redis: Redis
) -> None:
    await worker.register_worker("w", OFFER)
    for name, backoff in (("gpu-eu", 120.0), ("gpu-us", 60.0)):
        await submit(pools, name, job(id="r"))
        held = await worker.claim("w", CAPS)
        assert isinstance(held, Claim)
        slow = dataclasses.replace(settings, retry_backoff_base=backoff, retry_backoff_cap=backoff)
        fence = await Broker(redis, slow, pool=name).fail("w", held.job.id, held.token, "later")
        assert fence == "retrying"
    due = [(await stored(pools, f"{name}!r")).retry_at for name in ("gpu-eu", "gpu-us")]
    answer = await worker.claim("w", CAPS)
    assert answer == NoClaim("empty", min(d for d in due if d is not None))


# -- the bound on priority inversion ---------------------------------------------------------


class Interleaved(Broker):
    """A real pool broker that lets something happen between a worker's peek and its claim
    in this pool (another worker's claim, a submission): the race, made to happen."""

    def __init__(self, redis: Redis, settings: BrokerSettings, pool: str) -> None:
        super().__init__(redis, settings, pool=pool)
        self.before_claim: list[Callable[[], Any]] = []

    async def claim(self, *args: Any, **kwargs: Any) -> Claim | NoClaim:
        if self.before_claim:  # one move per claim
            await self.before_claim.pop(0)()
        return await super().claim(*args, **kwargs)


@pytest.fixture
def raced(redis: Redis, settings: BrokerSettings) -> tuple[PooledBroker, Interleaved]:
    """A worker whose claims in gpu-eu can be preceded by a rival's move."""
    pool_set = PoolSet(redis, settings)
    eu = Interleaved(redis, settings, "gpu-eu")
    pool_set.brokers["gpu-eu"] = eu
    return PooledBroker(pool_set), eu


async def test_a_race_lost_in_the_best_pool_falls_to_the_next_pool(
    pools: PoolSet, raced: tuple[PooledBroker, Interleaved]
) -> None:
    worker, eu = raced
    await worker.register_worker("w", OFFER)
    only = await submit(pools, "gpu-eu", job(id="only", priority=90))
    other = await submit(pools, "gpu-us", job(id="other", priority=50))
    eu.before_claim.append(lambda: rival_claims(pools, "gpu-eu", only))
    claim = await worker.claim("w", CAPS)
    assert isinstance(claim, Claim)
    assert claim.job.id == other


async def test_a_lost_race_never_takes_a_job_ranked_below_another_pools_head(
    pools: PoolSet, raced: tuple[PooledBroker, Interleaved]
) -> None:
    """The peek saw gpu-eu's 90 as best; a rival takes it before the claim, leaving a 10
    there. The worker takes gpu-us's 50, not the 10: the claim's floor refuses the 10."""
    worker, eu = raced
    await worker.register_worker("w", OFFER)
    best = await submit(pools, "gpu-eu", job(id="best", priority=90))
    await submit(pools, "gpu-eu", job(id="low", priority=10))
    middle = await submit(pools, "gpu-us", job(id="middle", priority=50))
    eu.before_claim.append(lambda: rival_claims(pools, "gpu-eu", best))
    claim = await worker.claim("w", CAPS)
    assert isinstance(claim, Claim)
    assert claim.job.id == middle
    assert (await stored(pools, "gpu-eu!low")).status == JobStatus.PENDING


async def test_a_job_submitted_between_peek_and_claim_is_passed_over_once(
    pools: PoolSet, raced: tuple[PooledBroker, Interleaved]
) -> None:
    """The one inversion the bound allows: a better job that appears in another pool within
    the round trip between the worker's look and its claim. The next claim takes it."""
    worker, eu = raced
    await worker.register_worker("w", OFFER)
    eu_job = await submit(pools, "gpu-eu", job(id="eu", priority=50))
    urgent: list[str] = []

    async def submit_urgent() -> None:
        urgent.append(await submit(pools, "gpu-us", job(id="urgent", priority=100)))

    eu.before_claim.append(submit_urgent)
    first = await worker.claim("w", CAPS)
    assert isinstance(first, Claim)
    assert first.job.id == eu_job
    second = await worker.claim("w", CAPS)
    assert isinstance(second, Claim)
    assert second.job.id == urgent[0]


async def test_a_worker_that_loses_every_race_takes_nothing_worse_and_comes_back_at_once(
    pools: PoolSet, redis: Redis, settings: BrokerSettings
) -> None:
    """Before each of its claims a rival takes the head of that pool, so every claim finds
    the pool's best below the other pool's last seen head. The worker keeps choosing again;
    after 2 x pools + 2 tries it gives up, holding nothing, and says to claim again now."""
    pool_set = PoolSet(redis, settings)
    raced = {name: Interleaved(redis, settings, name) for name in ("gpu-eu", "gpu-us")}
    pool_set.brokers.update(raced)
    worker = PooledBroker(pool_set)
    await worker.register_worker("w", OFFER)
    for name, priorities in (("gpu-eu", [90, 70, 50, 30, 10]), ("gpu-us", [80, 60, 40, 20, 0])):
        for p in priorities:
            await submit(pools, name, job(priority=p))
        # A rival takes the head (whichever job it is) before each claim of this worker.
        move: Callable[[], Any] = functools.partial(rival_claims, pools, name)
        raced[name].before_claim += [move] * len(priorities)
    answer = await worker.claim("w", CAPS)
    assert isinstance(answer, NoClaim)
    assert answer.reason == "contended"
    assert answer.next_due_ms is not None
    assert await pool(pools, "gpu-eu").lease_count("w") == 0
    assert await pool(pools, "gpu-us").lease_count("w") == 0
    # The last two jobs, each below the other pool's head at the time, were left alone.
    assert [await pool(pools, n).pending_count() for n in ("gpu-eu", "gpu-us")] == [1, 1]


async def rival_claims(pools: PoolSet, name: str, expected: str | None = None) -> None:
    taken = await pool(pools, name).claim("rival", OFFER)
    assert isinstance(taken, Claim)
    assert expected in (None, taken.job.id)


async def test_a_claim_with_a_floor_takes_nothing_ranked_below_it(pools: PoolSet) -> None:
    broker = pool(pools, "gpu-eu")
    await broker.submit(job(id="j", priority=40))
    stored = await broker.get("gpu-eu!j")
    assert stored is not None
    refused = await broker.claim("w", OFFER, floor=Rank.of(41, 0))
    assert refused == NoClaim("worse", None, None, rank(stored))
    assert await broker.pending_count() == 1
    # Equal rank: taken (ties go to the pool claimed from).
    taken = await broker.claim("w", OFFER, floor=rank(stored))
    assert isinstance(taken, Claim)


@pytest.mark.parametrize("seed", range(5))
async def test_every_claim_takes_the_best_head_of_all_pools(
    pools: PoolSet, worker: PooledBroker, seed: int
) -> None:
    """Without a race the bound is exact: each claim takes the best of the pools' heads, as
    each pool's own peek names them just before."""
    rng = random.Random(seed)
    await worker.register_worker("w", OFFER)
    shapes: list[dict[str, Any]] = [{}, {"models": ["m"]}, {"hardware": {"gpu": {"memory_gb": 80}}}]
    offer = caps(models=["m"])
    for n in range(40):
        pool = rng.choice(POOLS)
        await submit(
            pools,
            pool,
            job(id=f"j{n}", priority=rng.choice([1, 50, 50, 90]), requirements=rng.choice(shapes)),
        )
    encoded = Broker.encode_capabilities(offer)
    while True:
        heads = [h for b in pools if isinstance(h := await b.peek("w", encoded), Head)]
        claim = await worker.claim("w", encoded)
        if not heads:
            assert isinstance(claim, NoClaim)
            return
        assert isinstance(claim, Claim)
        best = min(heads, key=lambda h: (h.rank, POOLS.index(pool_of(h.job_id))))
        assert claim.job.id == best.job_id
        assert await worker.complete("w", claim.job.id, claim.token, None) == "ok"


# -- customer isolation across pools ---------------------------------------------------------


async def test_a_loose_isolation_job_in_one_pool_locks_the_worker_in_the_others(
    pools: PoolSet, worker: PooledBroker
) -> None:
    await worker.register_worker("w", OFFER)
    loose = await submit(
        pools,
        "gpu-eu",
        job(id="mine", customer_id="acme", requirements={"customer_isolation": "loose"}),
    )
    held = await worker.claim("w", CAPS)
    assert isinstance(held, Claim)
    assert held.job.id == loose
    theirs = await submit(pools, "gpu-us", job(id="theirs", customer_id="beta"))
    assert isinstance(await worker.claim("w", CAPS), NoClaim)
    fence, follow_up = await worker.complete_and_claim("w", loose, held.token, None, CAPS)
    assert fence == "ok"
    assert isinstance(follow_up, Claim)
    assert follow_up.job.id == theirs


# -- the fleet: every pool; reports: the job's pool -------------------------------------------


async def test_registration_heartbeat_state_and_deregistration_reach_every_pool(
    pools: PoolSet, worker: PooledBroker, redis: Redis
) -> None:
    assert await worker.register_worker("w", OFFER, {"host": "box"}) == "active"
    for b in pools:
        view = await b.reads.fleet.worker("w")
        assert view is not None, b.pool
    held = {}
    for name in ("gpu-eu", "gpu-us"):
        await submit(pools, name, job(id="j"))
        claim = await worker.claim("w", CAPS)
        assert isinstance(claim, Claim)
        held[claim.job.id] = claim.token
    assert await worker.heartbeat("w", status="busy", running=held) == []
    for b in pools:
        view = await b.reads.fleet.worker("w")
        assert view is not None
        assert view.status == "busy"

    # A job cancelled in its pool comes back from the heartbeat, and only that one.
    us = pool(pools, "gpu-us")
    assert (await us.cancel("gpu-us!j")).outcome == "cancelled"
    assert await worker.heartbeat("w", status="busy", running=held) == ["gpu-us!j"]

    assert await worker.set_worker_state("w", "paused") is True
    for b in pools:
        assert await redis.hget(b.keys.worker("w"), "state") == b"paused"
    assert await worker.claim("w", CAPS) == NoClaim("paused", None)
    assert await worker.set_worker_state("w", "active") is True

    assert await worker.deregister_worker("w") == 1  # gpu-eu!j went back to pending
    for b in pools:
        assert await redis.zscore(b.keys.workers, "w") is None, b.pool
        view = await b.reads.fleet.worker("w")
        assert view is not None
        assert view.status == "offline"
    assert (await stored(pools, "gpu-eu!j")).status == JobStatus.PENDING


async def test_a_worker_paused_in_one_pool_still_claims_from_the_others(
    pools: PoolSet, worker: PooledBroker
) -> None:
    await worker.register_worker("w", OFFER)
    eu = pool(pools, "gpu-eu")
    await eu.set_worker_state("w", "paused")  # a hub of gpu-eu paused it there
    await eu.submit(job(id="held-back", priority=100))
    free = await submit(pools, "gpu-us", job(id="free", priority=1))
    claim = await worker.claim("w", CAPS)
    assert isinstance(claim, Claim)
    assert claim.job.id == free
    assert await worker.claim("w", CAPS) == NoClaim("empty", None)


async def test_reports_and_cancels_go_to_the_pool_of_the_job(
    pools: PoolSet, worker: PooledBroker
) -> None:
    await worker.register_worker("w", OFFER)
    ids = [
        await submit(pools, name, job(id="j", max_retries=0))
        for name in ("gpu-eu", "gpu-us", "default")
    ]
    assert ids == ["gpu-eu!j", "gpu-us!j", "j"]
    claims: dict[str, Claim] = {}
    for _ in ids:
        claim = await worker.claim("w", CAPS)
        assert isinstance(claim, Claim)
        claims[claim.job.id] = claim
    eu, us, default = claims["gpu-eu!j"], claims["gpu-us!j"], claims["j"]
    assert await worker.progress("w", eu.job.id, eu.token, 40, "eu") == "ok"
    assert await worker.complete("w", eu.job.id, eu.token, {"pool": "eu"}) == "ok"
    assert await worker.fail("w", us.job.id, us.token, "boom", retryable=False) == "failed"
    assert (await worker.cancel(default.job.id, "enough")).outcome == "cancelled"

    done = await stored(pools, "gpu-eu!j")
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"pool": "eu"})
    assert (await stored(pools, "gpu-us!j")).status == JobStatus.FAILED
    assert (await stored(pools, "j")).status == JobStatus.CANCELLED
    assert await worker.release("w", default.job.id, default.token) == "cancelled"


# -- a pool that cannot be reached ------------------------------------------------------------


@pytest.fixture
async def nowhere() -> AsyncIterator[Redis]:
    """A client of a Redis that is not there (a port nobody listens on): every call fails,
    connection refused after the client's retries, as with a primary that just died."""
    client = connect_server(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        yield client
    finally:
        await client.aclose()


def cut_off(redis: Redis, settings: BrokerSettings, nowhere: Redis, *names: str) -> PoolSet:
    """The pools with `names` on `nowhere`: as on a Redis Cluster where each pool has a
    primary of its own and those pools' primary has failed, the others' not."""
    pools = PoolSet(redis, settings)
    for name in names:
        pools.brokers[name] = Broker(nowhere, settings, pool=name)
    return pools


@pytest.mark.parametrize("chained", [False, True], ids=["claim", "complete_and_claim"])
async def test_a_pool_that_cannot_be_reached_holds_up_none_of_the_others(
    redis: Redis, settings: BrokerSettings, pools: PoolSet, nowhere: Redis, chained: bool
) -> None:
    """Its peek and its claim fail; the worker claims and completes the other pools' jobs
    all the same (a completion's report does not fail for another pool's peek), and with
    nothing left it idles, to look at the lost pool again within a second."""
    worker = PooledBroker(cut_off(redis, settings, nowhere, "gpu-us"))
    for name in ("gpu-eu", "default"):
        await pool(pools, name).register_worker("w", OFFER)
    ids = [
        await submit(pools, name, job(id=f"j{n}"))
        for n, name in enumerate(["gpu-eu", "default"] * 3)
    ]
    assert sorted(await drain(worker, chained=chained)) == sorted(ids)
    nothing = await worker.claim("w", CAPS)
    assert isinstance(nothing, NoClaim)
    assert nothing.reason == "empty"
    assert nothing.next_due_ms is not None


async def test_a_claim_raises_when_no_pool_can_be_reached(
    redis: Redis, settings: BrokerSettings, nowhere: Redis
) -> None:
    """As with one pool: the worker's claim loop then backs off, as for any outage. The
    second claim, while every pool is left out after the first, tries them all again."""
    worker = PooledBroker(cut_off(redis, settings, nowhere, *POOLS))
    for _ in range(2):
        with pytest.raises(RedisConnectionError):
            await worker.claim("w", CAPS)


async def test_a_wait_per_pool_outlives_a_pool_that_cannot_be_reached(
    redis: Redis, settings: BrokerSettings, pools: PoolSet, nowhere: Redis
) -> None:
    """The failed pool's wait ends at once (connection refused, after its retries, well
    within the timeout); the others wait on: a timeout is None, not that error, and a
    submission to a live pool still wakes the worker. Every pool failing raises."""
    waiter = PooledBroker(cut_off(redis, settings, nowhere, "gpu-us"), per_pool_waits=True)
    assert await waiter.wait_for_work(["sim"], timeout=2) is None
    wait = asyncio.create_task(waiter.wait_for_work(["sim"], timeout=30))
    await wait_until(lambda: blocked_clients(redis), message="the waiter blocks")
    await submit(pools, "gpu-eu", job())
    assert await asyncio.wait_for(wait, timeout=5) is not None
    lost = PooledBroker(cut_off(redis, settings, nowhere, *POOLS), per_pool_waits=True)
    with pytest.raises(RedisConnectionError):
        await lost.wait_for_work(["sim"], timeout=30)


# -- wake-ups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_pool", [False, True], ids=["one-blpop", "blpop-per-pool"])
async def test_a_submission_to_any_pool_wakes_a_waiting_multi_pool_worker(
    redis: Redis, settings: BrokerSettings, pools: PoolSet, per_pool: bool
) -> None:
    waiter = PooledBroker(PoolSet(redis, settings), per_pool_waits=per_pool)
    for name in POOLS:
        wait = asyncio.create_task(waiter.wait_for_work(["sim"], timeout=30))
        await wait_until(lambda: blocked_clients(redis), message="the waiter blocks")
        await submit(pools, name, job())
        hops = await asyncio.wait_for(wait, timeout=5)
        assert hops is not None, name


@pytest.mark.parametrize("per_pool", [False, True], ids=["one-blpop", "blpop-per-pool"])
async def test_a_multi_pool_worker_wakes_on_its_own_doorbell_in_any_pool(
    redis: Redis, settings: BrokerSettings, pools: PoolSet, per_pool: bool
) -> None:
    """The fit policy rings one worker's doorbell in the pool whose job it leaves to it."""
    waiter = PooledBroker(PoolSet(redis, settings), per_pool_waits=per_pool)
    for name in POOLS:
        wait = asyncio.create_task(waiter.wait_for_work(["sim"], timeout=30, worker_id="w"))
        await wait_until(lambda: blocked_clients(redis), message="the waiter blocks")
        await redis.lpush(pool(pools, name).keys.wake("w"), "0")
        assert await asyncio.wait_for(wait, timeout=5) == 0, name


async def blocked_clients(redis: Redis) -> bool:
    info = await redis.info("clients")
    return int(info["blocked_clients"]) > 0


async def test_a_wait_times_out_with_none_when_no_pool_rings(
    redis: Redis, settings: BrokerSettings
) -> None:
    for per_pool in (False, True):
        waiter = PooledBroker(PoolSet(redis, settings), per_pool_waits=per_pool)
        assert await waiter.wait_for_work(["sim"], timeout=0.05) is None


async def test_a_wake_up_for_work_the_worker_cannot_do_is_passed_on_in_its_pool(
    pools: PoolSet, worker: PooledBroker, redis: Redis
) -> None:
    await worker.register_worker("w", OFFER)
    us = pool(pools, "gpu-us")
    await us.submit(job(requirements={"hardware": {"gpu": {"memory_gb": 80}}}))
    hops = await worker.wait_for_work(["sim"], timeout=5)
    assert hops is not None
    assert hops > 0
    assert await redis.llen(us.keys.notify("sim")) == 0
    assert await worker.claim("w", CAPS, hops=hops) == NoClaim("empty", None)
    # Passed on with one hop less, for an idle worker that may have the GPU.
    assert await redis.lrange(us.keys.notify("sim"), 0, -1) == [str(hops - 1).encode()]


# -- peek.lua is read-only, and names what the claim takes ------------------------------------


async def snapshot(redis: Redis) -> dict[bytes, bytes | None]:
    return {key: await redis.dump(key) async for key in redis.scan_iter(count=1000)}


async def test_peek_changes_no_key(redis: Redis, pools: PoolSet, worker: PooledBroker) -> None:
    """Even with a retry due (which a claim would move into its class and ring for)."""
    eu = pool(pools, "gpu-eu")
    await worker.register_worker("w", OFFER)
    await eu.submit(job(id="retry", priority=90))
    await eu.submit(job(id="waiting", priority=10))
    held = await eu.claim("other", OFFER)
    assert isinstance(held, Claim)
    assert await eu.fail("other", held.job.id, held.token, "again") == "retrying"

    async def retry_due() -> bool:
        head = await eu.peek("w", CAPS)
        return isinstance(head, Head) and head.job_id == "gpu-eu!retry"

    await wait_until(retry_due, message="the retry is due and peek names it")
    await redis.delete(eu.keys.notify("sim"))
    before = await snapshot(redis)
    for b in pools:
        await b.peek("w", CAPS)
        await b.peek("w", CAPS, elsewhere=[("acme", "loose")])
    assert await snapshot(redis) == before
    claim = await eu.claim("w", OFFER)
    assert isinstance(claim, Claim)
    assert claim.job.id == "gpu-eu!retry"


async def test_peek_answers_paused_and_empty_like_the_claim(pools: PoolSet) -> None:
    eu = pool(pools, "gpu-eu")
    assert await eu.peek("w", CAPS) == NoClaim("empty", None)
    await eu.register_worker("w", OFFER)
    await eu.set_worker_state("w", "draining")
    await eu.submit(job())
    assert await eu.peek("w", CAPS) == NoClaim("draining", None)
    assert await eu.claim("w", OFFER) == NoClaim("draining", None)


# -- the worker process's link and runtime ----------------------------------------------------


async def test_one_pool_keeps_the_plain_broker_and_several_get_the_pooled_one(
    redis_url: str,
) -> None:
    single = worker_settings(redis_url, POOLS="gpu-eu")
    link = RedisLink(single.redis, single.broker, "w")
    try:
        assert type(link.broker) is Broker
        assert link.broker.pool == "gpu-eu"
    finally:
        await link.aclose()
    several = worker_settings(redis_url, POOLS="gpu-eu,gpu-us")
    link = RedisLink(several.redis, several.broker, "w")
    try:
        assert isinstance(link.broker, PooledBroker)
        assert link.waiter is link.broker
    finally:
        await link.aclose()


async def test_a_one_pool_claim_costs_one_script_call_and_several_pools_a_peek_each_more(
    redis: Redis, pools: PoolSet, worker: PooledBroker
) -> None:
    eu = pool(pools, "gpu-eu")
    await eu.submit(job(id="a"))
    await eu.submit(job(id="b"))
    before = await script_calls(redis)
    assert isinstance(await eu.claim("w", OFFER), Claim)
    assert await script_calls(redis) - before == 1
    before = await script_calls(redis)
    assert isinstance(await worker.claim("w", CAPS), Claim)
    assert await script_calls(redis) - before == len(POOLS) + 1


async def script_calls(redis: Redis) -> int:
    return script_call_stats(await redis.info("commandstats"))[0]


async def test_a_worker_with_two_pools_runs_the_jobs_of_both(
    redis_url: str, pools: PoolSet, redis: Redis
) -> None:
    settings = worker_settings(redis_url, POOLS="gpu-eu,gpu-us")
    eu, us = pool(pools, "gpu-eu"), pool(pools, "gpu-us")
    async with running_worker(settings) as w:
        for b in (eu, us):
            assert await redis.zscore(b.keys.workers, w.id) is not None
        ids = [
            (await b.submit(job("simulation", payload=sim(result=b.pool)))).job_id
            for b in (eu, us, eu, us)
        ]
        for job_id in ids:
            broker = pools.for_job(job_id)
            assert broker is not None
            done = await finished(broker, job_id)
            assert done.status == JobStatus.COMPLETED
            assert done.worker_id == w.id
    for b in (eu, us):
        assert await redis.zscore(b.keys.workers, settings.worker_id) is None


async def test_the_control_subscription_hears_cancels_from_every_pool(
    pools: PoolSet, worker: PooledBroker, redis: Redis
) -> None:
    await worker.register_worker("w", OFFER)
    for name in POOLS:
        await submit(pools, name, job(id="j"))
        assert isinstance(await worker.claim("w", CAPS), Claim)
    subscription = worker.control_subscription("w")
    try:
        await subscription.subscribe()
        channels = [b.keys.control("w") for b in pools]
        subscribed = await redis.pubsub_numsub(*channels)
        assert [count for _, count in subscribed] == [1, 1, 1]
        for job_id in ("gpu-us!j", "j", "gpu-eu!j"):
            assert (await pool(pools, pool_of(job_id)).cancel(job_id)).outcome == "cancelled"
        heard = await asyncio.wait_for(messages(subscription, 3), timeout=5)
        assert heard == ["cancel gpu-us!j", "cancel j", "cancel gpu-eu!j"]
    finally:
        await subscription.aclose()


async def messages(subscription: ControlSubscription, count: int) -> list[str]:
    out: list[str] = []
    async for message in subscription.messages():
        if message is not None:
            out.append(message)
        if len(out) == count:
            return out
    return out
