"""The idle-worker index (shared/lua/include/idle_workers.lua): who is idle, how big, and
for how long; each worker's own doorbell; and the search for a smaller idle worker that could
run a class, held equal to the Python reference (shared/scheduling/fit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.redis_types import RedisClient
from shared.scheduling.fit import worker_size
from shared.text import as_text
from tests.factories import caps, gpu, job
from tests.helpers import wait_until

H100 = caps(hardware={"gpus": [gpu(80, "NVIDIA H100")]}, cost={"per_hour": 2.5})
A6000 = caps(hardware={"gpus": [gpu(48, "NVIDIA RTX A6000")]}, cost={"per_hour": 0.8})
RTX4090 = caps(hardware={"gpus": [gpu(24)]}, cost={"per_hour": 0.4})
CPU_ONLY = caps(cost={"per_hour": 0.1})


class Fleet:
    """Workers of one pool, registered and claiming through the real scripts."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.keys = broker.keys

    async def idle(self, worker_id: str, offer: Capabilities) -> None:
        """Register `worker_id` and let it claim nothing: it becomes idle."""
        await self.broker.register_worker(worker_id, offer)
        assert await self.broker.claim(worker_id, offer) == NoClaim("empty", None)

    async def idle_ids(self, service: str = "sim") -> list[str]:
        return [as_text(w) for w in await self.redis.zrange(self.keys.idle_workers(service), 0, -1)]

    async def size_of(self, worker_id: str, service: str = "sim") -> float | None:
        score = await self.redis.zscore(self.keys.idle_workers(service), worker_id)
        return None if score is None else float(score)

    async def ring(self, worker_id: str) -> None:
        await self.redis.lpush(self.keys.wake(worker_id), "0")


@pytest.fixture
def fleet(broker: Broker) -> Fleet:
    return Fleet(broker)


@pytest.fixture
async def blocking(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=None)
    yield client
    await client.aclose()


# -- the index ----------------------------------------------------------------------------------


async def test_a_claim_that_finds_nothing_indexes_the_worker_under_each_service_by_size(
    fleet: Fleet,
) -> None:
    both = caps(("sim", "comfyui"), hardware={"gpus": [gpu(24)]}, cost={"per_hour": 0.4})
    await fleet.idle("w", both)
    assert await fleet.idle_ids("sim") == ["w"]
    assert await fleet.idle_ids("comfyui") == ["w"]
    assert await fleet.size_of("w") == worker_size(both) == 240 * 1_000_000 + 400


async def test_size_orders_by_largest_gpu_then_cost_and_cpu_only_is_smallest(fleet: Fleet) -> None:
    cheap_80 = caps(hardware={"gpus": [gpu(80)]}, cost={"per_hour": 1.0})
    two_24 = caps(hardware={"gpus": [gpu(24), gpu(24)]}, cost={"per_hour": 5.0})
    for worker_id, offer in [("h100", H100), ("cheap-80", cheap_80), ("a6000", A6000),
                             ("two-24", two_24), ("4090", RTX4090), ("cpu", CPU_ONLY)]:  # fmt: skip
        await fleet.idle(worker_id, offer)
    assert await fleet.idle_ids() == ["cpu", "4090", "two-24", "a6000", "cheap-80", "h100"]


async def test_a_successful_claim_takes_the_worker_out_of_the_index(fleet: Fleet) -> None:
    await fleet.idle("w", RTX4090)
    await fleet.broker.submit(job(id="j"))
    assert isinstance(await fleet.broker.claim("w", RTX4090), Claim)
    assert await fleet.idle_ids() == []
    assert await fleet.redis.hmget(fleet.keys.worker("w"), ["idle_in", "idle_caps"]) == [None, None]


async def test_an_unregistered_worker_is_never_indexed(fleet: Fleet) -> None:
    assert await fleet.broker.claim("ghost", RTX4090) == NoClaim("empty", None)
    assert await fleet.idle_ids() == []
    assert await fleet.redis.exists(fleet.keys.worker("ghost")) == 0


async def test_a_worker_that_stops_offering_a_service_leaves_its_index(fleet: Fleet) -> None:
    await fleet.idle("w", caps(("sim", "comfyui")))
    assert await fleet.broker.claim("w", caps(("comfyui",))) == NoClaim("empty", None)
    assert await fleet.idle_ids("sim") == []
    assert await fleet.idle_ids("comfyui") == ["w"]


async def test_deregistering_clears_the_entry_and_the_doorbell(fleet: Fleet) -> None:
    await fleet.idle("w", RTX4090)
    await fleet.redis.lpush(fleet.keys.wake("w"), "0")  # a wake-up it never took
    await fleet.broker.deregister_worker("w")
    assert await fleet.idle_ids() == []
    assert await fleet.redis.exists(fleet.keys.wake("w")) == 0


async def test_the_reaper_clears_a_dead_worker(fleet: Fleet) -> None:
    await fleet.idle("w", RTX4090)
    await fleet.redis.zadd(fleet.keys.workers, {"w": 1})  # its heartbeat lapsed long ago
    report = await fleet.broker.reap()
    assert report.recovered == []
    assert await fleet.idle_ids() == []


@pytest.mark.parametrize("state", ["paused", "draining"])
async def test_pausing_or_draining_clears_the_entry(fleet: Fleet, state: str) -> None:
    await fleet.idle("w", RTX4090)
    assert await fleet.broker.set_worker_state("w", state)  # type: ignore[arg-type]
    assert await fleet.idle_ids() == []
    assert await fleet.broker.set_worker_state("w", "active")
    assert await fleet.idle_ids() == []  # idle again only once a claim finds nothing
    await fleet.broker.claim("w", RTX4090)
    assert await fleet.idle_ids() == ["w"]


async def test_registering_again_clears_what_a_previous_run_left(fleet: Fleet) -> None:
    await fleet.idle("w", caps(("sim", "comfyui")))
    await fleet.broker.register_worker("w", caps(("comfyui",)))
    assert await fleet.idle_ids("sim") == []
    assert await fleet.idle_ids("comfyui") == []


async def test_a_worker_at_its_lease_cap_is_not_idle(fleet: Fleet) -> None:
    await fleet.idle("w", RTX4090)
    await fleet.broker.submit(job(id="j"))
    assert isinstance(await fleet.broker.claim("w", RTX4090, max_leases=1), Claim)
    await fleet.broker.claim("w", RTX4090)  # nothing left: idle again, though it holds one
    assert await fleet.idle_ids() == ["w"]
    assert await fleet.broker.claim("w", RTX4090, max_leases=1) == NoClaim("limit", None)
    assert await fleet.idle_ids() == []


# -- the per-worker doorbell --------------------------------------------------------------------


async def test_ringing_a_worker_wakes_that_worker_only(fleet: Fleet, blocking: Redis) -> None:
    await fleet.idle("small", RTX4090)
    await fleet.idle("other", A6000)
    waiter = Broker(blocking, fleet.broker.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="small"))
    await wait_until(lambda: _blocked(fleet.redis), timeout=5)
    await fleet.ring("small")
    assert await asyncio.wait_for(woken, 5) == 0
    assert await fleet.broker.wait_for_work(["sim"], 0.01, worker_id="other") is None


async def test_a_service_doorbell_still_wakes_a_worker_waiting_on_its_own(
    fleet: Fleet, blocking: Redis
) -> None:
    waiter = Broker(blocking, fleet.broker.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="w"))
    await wait_until(lambda: _blocked(fleet.redis), timeout=5)
    await fleet.broker.submit(job(id="j"))
    assert await asyncio.wait_for(woken, 5) == 3


async def _blocked(redis: RedisClient) -> bool:
    return int((await redis.info("clients"))["blocked_clients"]) > 0
