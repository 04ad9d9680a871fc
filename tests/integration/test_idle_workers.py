"""The idle-worker index (shared/lua/include/idle_workers.lua): who is idle, how big, and
for how long; each worker's own doorbell; and the search for a smaller idle worker that could
run a class, held equal to the Python reference (shared/scheduling/fit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.keys import Keys
from shared.lua_source import assemble, source
from shared.matching import Demand, RunningCustomer
from shared.redis_types import RedisClient
from shared.requirements import Requirements
from shared.scheduling.fit import FIT_LOOK, IdleWorker, fit_blocker, worker_size
from shared.text import as_text
from shared.validation import convert
from tests.factories import caps, demand, gpu, job
from tests.helpers import wait_until
from tests.integration.test_match_agreement import capabilities, requirements, running

# Runs the index's helpers on their own, as the claim's fit check and wake-up do.
# ARGV[4]: 'match' (then service, class document JSON, claimant capabilities JSON) or 'ring'
# (then a worker id).
PROBE = """
--- @include "idle_workers"
if ARGV[4] == 'ring' then ring_worker(ARGV[5]); return '' end
local size = idle_size(prepare_caps(ARGV[7]))
return smaller_idle_match(ARGV[5], cjson.decode(ARGV[6]), size, now_ms()) or ''
"""

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
        self._probe = self.redis.register_script(assemble("probe", PROBE))

    async def idle(self, worker_id: str, offer: Capabilities) -> None:
        """Register `worker_id` and let it claim nothing: it becomes idle."""
        await self.broker.register_worker(worker_id, offer)
        assert await self.broker.claim(worker_id, offer) == NoClaim("empty", None)

    async def idle_ids(self, service: str = "sim") -> list[str]:
        return [as_text(w) for w in await self.redis.zrange(self.keys.idle_workers(service), 0, -1)]

    async def size_of(self, worker_id: str, service: str = "sim") -> float | None:
        score = await self.redis.zscore(self.keys.idle_workers(service), worker_id)
        return None if score is None else float(score)

    async def blocker(self, want: Demand, claimant: Capabilities) -> str | None:
        doc = {
            "s": want.service_type,
            "c": want.customer_id,
            "r": msgspec.to_builtins(want.requirements),
        }
        found = await self._probe(
            keys=[self.keys.pending],
            args=["", 1000, 1000, "match", want.service_type, orjson.dumps(doc),
                  msgspec.json.encode(claimant)],
        )  # fmt: skip
        return as_text(found) or None

    async def ring(self, worker_id: str) -> None:
        await self._probe(keys=[self.keys.pending], args=["", 1000, 1000, "ring", worker_id])


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


# -- the smaller idle worker that could run a class --------------------------------------------


async def test_the_largest_smaller_idle_worker_that_can_run_the_class_is_named(
    fleet: Fleet,
) -> None:
    for worker_id, offer in [("a6000", A6000), ("4090", RTX4090), ("cpu", CPU_ONLY)]:
        await fleet.idle(worker_id, offer)
    assert await fleet.blocker(demand(hardware={"gpu": {"memory_gb": 8}}), H100) == "a6000"
    assert await fleet.blocker(demand(hardware={"gpu": {"memory_gb": 40}}), H100) == "a6000"
    assert await fleet.blocker(demand(hardware={"gpu": {"memory_gb": 8}}), A6000) == "4090"
    assert await fleet.blocker(demand(), RTX4090) == "cpu"


async def test_a_job_only_the_claimant_can_run_is_never_left_to_anyone(fleet: Fleet) -> None:
    tagged = caps(
        hardware={"gpus": [gpu(80)]}, models=["flux"], geographic={"compliance": ["gdpr"]}
    )
    for worker_id, offer in [("a6000", A6000), ("4090", RTX4090)]:
        await fleet.idle(worker_id, offer)
    assert await fleet.blocker(demand(hardware={"gpu": {"memory_gb": 60}}), tagged) is None
    assert await fleet.blocker(demand(models=["flux"]), tagged) is None
    assert await fleet.blocker(demand(geographic={"compliance": ["gdpr"]}), tagged) is None
    assert await fleet.blocker(demand(service="comfyui"), caps(("comfyui",), **_h100())) is None


def _h100() -> dict[str, Any]:
    return {"hardware": {"gpus": [gpu(80)]}}


async def test_equal_workers_never_defer_to_each_other(fleet: Fleet) -> None:
    await fleet.idle("twin", RTX4090)
    assert await fleet.blocker(demand(), RTX4090) is None
    assert await fleet.blocker(demand(), H100) == "twin"


async def test_only_a_few_of_the_largest_smaller_workers_are_examined(fleet: Fleet) -> None:
    # FIT_LOOK workers of 48 GB without the model, and a 24 GB worker that has it: the check
    # stops before reaching it (bounded), so the job is not left to anyone.
    for i in range(FIT_LOOK):
        await fleet.idle(f"a6000-{i}", A6000)
    await fleet.idle("4090", caps(hardware={"gpus": [gpu(24)]}, models=["sdxl"]))
    assert await fleet.blocker(demand(models=["sdxl"]), H100) is None
    await fleet.broker.deregister_worker("a6000-0")
    assert await fleet.blocker(demand(models=["sdxl"]), H100) == "4090"


async def test_a_stale_entry_never_blocks(fleet: Fleet) -> None:
    await fleet.idle("lapsed", RTX4090)
    # Its heartbeat lapsed and no reaper has run yet: still indexed, but not a blocker.
    await fleet.redis.zadd(fleet.keys.workers, {"lapsed": 1})
    assert await fleet.idle_ids() == ["lapsed"]
    assert await fleet.blocker(demand(), H100) is None


async def test_the_idle_workers_own_leases_count_for_customer_isolation(fleet: Fleet) -> None:
    await fleet.idle("4090", RTX4090)
    await fleet.redis.hset(fleet.keys.leases("4090"), "other", "7|acme|loose|0")
    assert await fleet.blocker(demand(customer="beta"), H100) is None
    assert await fleet.blocker(demand(customer="acme"), H100) == "4090"


# -- the per-worker doorbell --------------------------------------------------------------------


async def test_ringing_a_worker_wakes_that_worker_only(fleet: Fleet, blocking: Redis) -> None:
    await fleet.idle("small", RTX4090)
    await fleet.idle("other", A6000)
    waiter = Broker(blocking, fleet.broker.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="small"))
    await wait_until(lambda: _blocked(fleet.redis), timeout=5)
    await fleet.ring("small")
    # A ring carries no hops (a worker woken for one job does not pass the wake-up on); the
    # rung worker stays idle until its own claim says otherwise.
    assert await asyncio.wait_for(woken, 5) == 0
    assert await fleet.idle_ids() == ["small", "other"]
    assert await fleet.broker.wait_for_work(["sim"], 0.01, worker_id="other") is None


async def test_a_service_doorbell_still_wakes_a_worker_waiting_on_its_own(
    fleet: Fleet, blocking: Redis
) -> None:
    waiter = Broker(blocking, fleet.broker.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="w"))
    await wait_until(lambda: _blocked(fleet.redis), timeout=5)
    await fleet.broker.submit(job(id="j"))
    assert await asyncio.wait_for(woken, 5) == 3


async def test_a_workers_doorbell_is_capped(fleet: Fleet) -> None:
    for _ in range(20):
        await fleet.ring("w")
    assert 1 <= await fleet.redis.llen(fleet.keys.wake("w")) <= 4


async def _blocked(redis: RedisClient) -> bool:
    return int((await redis.info("clients"))["blocked_clients"]) > 0


# -- Lua equals Python ----------------------------------------------------------------------------


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[SyncRedis]:
    client = SyncRedis.from_url(redis_url)
    yield client
    client.close()


# Documents drawn from a few values of the dimensions fit is about (GPU memory, models,
# compliance, cost), so that smaller idle workers often can run the job, mixed with the
# matcher test's broad documents.
MEMORY = st.sampled_from([8.0, 16.0, 24.0, 24.0, 48.0, 80.0, 140.4])


def focused(memory: st.SearchStrategy[float]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda services, memories, models, compliance, cost: {
            "services": services,
            "hardware": {"gpus": [{"memory_gb": m} for m in memories]},
            "models": models,
            "geographic": {"compliance": compliance},
            "cost": {"per_hour": cost},
        },
        st.lists(st.sampled_from(["sim", "comfyui"]), min_size=1, max_size=2, unique=True),
        st.lists(memory, min_size=1, max_size=2),
        st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True),
        st.lists(st.sampled_from(["gdpr"]), max_size=1),
        st.sampled_from([0.0, 0.4, 0.4, 0.8, 2.5]),
    )


focused_caps = focused(MEMORY)
# A claimant is more often big, so that smaller idle workers exist.
big_caps = focused(st.sampled_from([80.0, 140.4]))
focused_requirements = st.builds(
    lambda memory, models, compliance: {
        k: v
        for k, v in {
            "hardware": None if memory is None else {"gpu": {"memory_gb": memory}},
            "models": models or None,
            "geographic": {"compliance": compliance} if compliance else None,
        }.items()
        if v is not None
    },
    st.sampled_from([None, None, 8.0, 24.0, 40.0, 80.0]),
    st.lists(st.sampled_from(["a", "b"]), max_size=1),
    st.lists(st.sampled_from(["gdpr"]), max_size=1),
)
any_caps = st.one_of(focused_caps, focused_caps, capabilities)
idle_worker = st.tuples(
    any_caps,
    st.one_of(st.just([]), running),
    st.sampled_from([True, True, False]),
    st.sampled_from(["a", "b", "c", "d", "e"]),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    service=st.sampled_from(["sim", "comfyui"]),
    customer=st.sampled_from(["", "acme", "beta"]),
    req_doc=st.one_of(focused_requirements, focused_requirements, requirements),
    claimant_doc=st.one_of(big_caps, any_caps),
    idle=st.lists(idle_worker, min_size=1, max_size=5, unique_by=lambda w: w[3]),
)
def test_lua_finds_the_same_smaller_idle_worker_as_python(
    sync_redis: SyncRedis,
    service: str,
    customer: str,
    req_doc: dict[str, Any],
    claimant_doc: dict[str, Any],
    idle: list[tuple[dict[str, Any], list[tuple[str, str]], bool, str]],
) -> None:
    sync_redis.flushdb()
    keys = Keys()

    def call(script: str, *args: Any) -> Any:
        return sync_redis.register_script(script)(keys=[keys.pending], args=["", 1000, 1000, *args])

    workers = []
    for caps_doc, held, live, worker_id in idle:
        offer = convert(caps_doc, Capabilities)
        encoded = msgspec.json.encode(offer)
        call(source("register"), worker_id, 60_000, encoded, "{}")
        assert call(source("claim"), worker_id, encoded, 64, 0, 0)[1] == b"empty"
        for n, (held_customer, isolation) in enumerate(held):
            sync_redis.hset(keys.leases(worker_id), f"j{n}", f"1|{held_customer}|{isolation}|0")
        if not live:
            sync_redis.zadd(keys.workers, {worker_id: 1})
        running_now = [RunningCustomer(c, i) for c, i in held]  # type: ignore[arg-type]
        workers.append(IdleWorker(worker_id, offer, running_now, live))

    want = Demand(service, customer, convert(req_doc, Requirements))
    claimant = convert(claimant_doc, Capabilities)
    expected = fit_blocker(want, claimant, workers)
    event(f"blocked={expected is not None}")
    doc = {"s": service, "c": customer, "r": msgspec.to_builtins(want.requirements)}
    found = call(assemble("probe", PROBE), "match", service, orjson.dumps(doc),
                 msgspec.json.encode(claimant))  # fmt: skip
    assert (as_text(found) or None) == expected, (req_doc, claimant_doc, idle)
