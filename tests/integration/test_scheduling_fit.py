"""Best fit in the claim (SCHEDULING_POLICIES=fit): a job that an idle smaller worker can run
is left to it and that worker is woken on its own doorbell, while the big worker blocks
instead of spinning; a job only the big worker can run is taken at once; and no job waits
more than FIT_MAX_DELAY_SECONDS beyond strict order for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.factories import caps, gpu, job
from tests.helpers import wait_until
from tests.worker_support import finished, running_worker, sim, worker_settings

BIG = caps(hardware={"gpus": [gpu(80, "NVIDIA H100")]}, cost={"per_hour": 2.5})
SMALL = caps(hardware={"gpus": [gpu(24)]}, cost={"per_hour": 0.4})
NEEDS_8 = {"hardware": {"gpu": {"memory_gb": 8}}}
NEEDS_40 = {"hardware": {"gpu": {"memory_gb": 40}}}


def fit_broker(redis: Redis, settings: BrokerSettings, max_delay: float = 60.0) -> Broker:
    return Broker(redis, replace(settings, scheduling_policies=("fit",), fit_max_delay=max_delay))


@pytest.fixture
async def blocking(redis_url: str) -> AsyncIterator[Redis]:
    """A connection for a worker's blocking wait, as a worker has its own."""
    client = Redis.from_url(redis_url, socket_timeout=None)
    yield client
    await client.aclose()


async def idle(broker: Broker, worker_id: str, offer: Capabilities) -> None:
    """Register `worker_id` and let its claim find nothing: it is idle."""
    await broker.register_worker(worker_id, offer)
    assert await broker.claim(worker_id, offer) == NoClaim("empty", None)


async def claimed(broker: Broker, worker_id: str, offer: Capabilities) -> str | None:
    """The id of the job `worker_id`'s claim takes, None when it takes nothing."""
    claim = await broker.claim(worker_id, offer)
    return claim.job.id if isinstance(claim, Claim) else None


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def blocked_clients(redis: Redis) -> int:
    return int((await redis.info("clients"))["blocked_clients"])


async def test_a_small_job_is_left_to_the_idle_small_worker_which_is_woken(
    redis: Redis, blocking: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    # The submission's doorbell happens to wake the big worker.
    hops = await broker.wait_for_work(["sim"], 1, worker_id="big")
    assert hops == 3
    small_waits = asyncio.create_task(
        Broker(blocking, broker.settings).wait_for_work(["sim"], 10, worker_id="small")
    )
    await wait_until(lambda: blocked_clients(redis), timeout=5)

    left = await broker.claim("big", BIG, hops=hops)
    # Nothing for the big worker: it blocks until the job's bound at the latest (no spinning),
    # and passes no wake-up on to the service's doorbell: it woke the small worker itself.
    assert isinstance(left, NoClaim)
    assert left.reason == "empty"
    held = await redis.hgetall(broker.keys.job("small-job"))
    assert as_text(held[b"held_by"]) == "fit"
    assert left.next_due_ms == int(held[b"held_until"])
    assert await redis.llen(broker.keys.notify("sim")) == 0

    assert await asyncio.wait_for(small_waits, 5) == 0  # its own doorbell: no hops
    assert await claimed(broker, "small", SMALL) == "small-job"


async def test_the_big_worker_takes_the_job_the_small_one_did_not_once_the_bound_is_over(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings, max_delay=0.3)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    hops = await broker.wait_for_work(["sim"], 1, worker_id="big")  # the submission's doorbell
    assert not isinstance(hops, Claim)
    left = await broker.claim("big", BIG, hops=hops or 0)
    assert isinstance(left, NoClaim)
    assert left.next_due_ms is not None
    # The small worker was woken but never claims. The big one waits for work until the due
    # time it was given (nothing else wakes it), then claims and gets the job.
    timeout = max(left.next_due_ms / 1000 - time.time(), 0.01)
    assert await broker.wait_for_work(["sim"], timeout + 0.05, worker_id="big") is None
    await wait_until(lambda: _past(redis, left.next_due_ms), timeout=5)
    assert await claimed(broker, "big", BIG) == "small-job"


async def _past(redis: Redis, ms: int | None) -> bool:
    return ms is not None and await redis_ms(redis) >= ms


async def test_no_job_waits_longer_than_the_bound_though_the_small_worker_stays_idle(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings, max_delay=0.3)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    assert await claimed(broker, "big", BIG) is None  # left to the small worker
    held_until = int(await redis.hget(broker.keys.job("small-job"), "held_until") or 0)
    await wait_until(lambda: _past(redis, held_until), timeout=5)
    # The small worker is still idle and could run it, yet the bound is over: taken.
    assert await redis.zscore(broker.keys.idle_workers("sim"), "small") is not None
    assert await claimed(broker, "big", BIG) == "small-job"


async def test_a_busy_big_worker_claiming_again_at_once_still_leaves_the_job(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    """A worker whose complete-and-claim found nothing claims again at once (its slot is
    free): that claim must not race the small worker it just woke."""
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "small", SMALL)
    await broker.register_worker("big", BIG)
    await broker.submit(job(id="big-job", requirements=NEEDS_40))
    first = await broker.claim("big", BIG)
    assert isinstance(first, Claim)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    fence, follow_up = await broker.complete_and_claim(
        "big", "big-job", first.token, None, Broker.encode_capabilities(BIG)
    )
    assert fence == "ok"
    assert isinstance(follow_up, NoClaim)
    assert await claimed(broker, "big", BIG) is None
    assert await claimed(broker, "small", SMALL) == "small-job"
    assert await redis.llen(broker.keys.wake("small")) == 0  # its spare wake-up is dropped


async def test_a_scan_in_pages_keeps_the_held_jobs_deadline(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    # One class per call: the first page holds the small job back, the second finds only a
    # job the big worker cannot run. The answer still says when to look again.
    broker = fit_broker(redis, replace(broker_settings, claim_scan_budget=1))
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    await broker.submit(job(id="other", requirements={"models": ["not-here"]}))
    left = await broker.claim("big", BIG)
    held_until = int(await redis.hget(broker.keys.job("small-job"), "held_until") or 0)
    assert left == NoClaim("empty", held_until)


async def test_a_job_only_the_big_worker_can_run_is_taken_at_once(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="big-job", requirements=NEEDS_40))
    assert await claimed(broker, "big", BIG) == "big-job"
    assert await redis.llen(broker.keys.wake("small")) == 0  # nobody was woken for it


async def test_the_big_worker_prefers_the_job_only_it_can_run(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))  # older: strict order's
    await broker.submit(job(id="big-job", requirements=NEEDS_40))
    assert await claimed(broker, "big", BIG) == "big-job"
    assert await redis.llen(broker.keys.wake("small")) == 1
    assert await claimed(broker, "small", SMALL) == "small-job"


async def test_without_fit_the_big_worker_takes_the_small_job(broker: Broker, redis: Redis) -> None:
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    assert await claimed(broker, "big", BIG) == "small-job"
    assert await redis.llen(broker.keys.wake("small")) == 0


async def test_equal_workers_do_not_leave_jobs_to_each_other(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "small-a", SMALL)
    await idle(broker, "small-b", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    assert await claimed(broker, "small-a", SMALL) == "small-job"


async def _deregister(broker: Broker, redis: Redis) -> None:
    await broker.deregister_worker("small")


async def _reap(broker: Broker, redis: Redis) -> None:
    await redis.zadd(broker.keys.workers, {"small": 1})
    await broker.reap()


async def _lapse(broker: Broker, redis: Redis) -> None:
    await redis.zadd(broker.keys.workers, {"small": 1})  # dead, not reaped yet


async def _pause(broker: Broker, redis: Redis) -> None:
    assert await broker.set_worker_state("small", "paused")


@pytest.mark.parametrize("gone", [_deregister, _reap, _lapse, _pause])
async def test_a_stale_idle_worker_never_holds_a_job_back(
    redis: Redis, broker_settings: BrokerSettings, gone: object
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "big", BIG)
    await idle(broker, "small", SMALL)
    await gone(broker, redis)  # type: ignore[operator]
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    assert await claimed(broker, "big", BIG) == "small-job"


async def test_peek_agrees_with_the_claim_that_leaves_the_job(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    broker = fit_broker(redis, broker_settings)
    await idle(broker, "big", BIG)
    for n in range(2):
        await idle(broker, f"small-{n}", SMALL)
    await broker.submit(job(id="small-job", requirements=NEEDS_8))
    await broker.claim("big", BIG)  # leaves it to one small worker, records the bound
    peeked = await broker.peek("big", Broker.encode_capabilities(BIG))
    held_until = int(await redis.hget(broker.keys.job("small-job"), "held_until") or 0)
    assert peeked == NoClaim("empty", held_until)


async def test_running_workers_leave_the_small_job_to_the_small_worker(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    """Real worker loops. The big worker waits first, so the submission's doorbell wakes it
    (Redis serves the longest-blocked client first); it leaves the 8 GB job and wakes the
    small worker, which runs it. The 40 GB job is the big worker's."""
    fit = {"SCHEDULING_POLICIES": "fit", "FIT_MAX_DELAY_SECONDS": "60", "GPU_COUNT": "1",
           "SIMULATION_SERVICE_NAME": "sim", "IDLE_POLL_SECONDS": "60"}  # fmt: skip
    small = worker_settings(redis_url, "small", GPU_MEMORY_GB="24", **fit)
    big = worker_settings(redis_url, "big", GPU_MEMORY_GB="80", **fit)

    def idle_are(*ids: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            found = await redis.zrange(broker.keys.idle_workers("sim"), 0, -1)
            return {as_text(w) for w in found} == set(ids)

        return check

    async with running_worker(big):
        await wait_until(idle_are("big"), timeout=10)
        async with running_worker(small):
            await wait_until(idle_are("big", "small"), timeout=10)
            await broker.submit(job(id="small-job", payload=sim(), requirements=NEEDS_8))
            assert (await finished(broker, "small-job")).worker_id == "small"
            await broker.submit(job(id="big-job", payload=sim(), requirements=NEEDS_40))
            assert (await finished(broker, "big-job")).worker_id == "big"
