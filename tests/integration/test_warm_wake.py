"""Waking a warm worker (shared/lua/include/idle_workers.lua wake_warm): a job that prefers
models and becomes claimable (submit, batch, release) rings the own doorbell of an idle
worker that has them warm and whose claims apply the `affinity` policy, instead of the
service's doorbell; otherwise, and with affinity off, the service's doorbell rings as
before. The warm index, warm:{service}:{model}, is emptied wherever the idle index is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.redis_types import RedisClient
from shared.text import as_text
from tests.factories import caps, gpu, job
from tests.helpers import wait_until

SDXL_WARM = caps(hardware={"gpus": [gpu(24)]}, models=["sdxl", "flux"], warm_models=["sdxl"])
COLD = caps(hardware={"gpus": [gpu(24)]}, models=["sdxl", "flux"])


class Pool:
    """One pool's broker with the given policies, its workers claiming through it."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.redis = broker.redis
        self.keys = broker.keys

    async def idle(self, worker_id: str, offer: Capabilities) -> None:
        """Register `worker_id` and let it claim nothing: it becomes idle."""
        await self.broker.register_worker(worker_id, offer)
        assert await self.broker.claim(worker_id, offer) == NoClaim("empty", None)

    async def rung(self) -> dict[str, int]:
        """The wake-up tokens waiting: the service's doorbell ('sim') and each worker's own
        (by worker id), where any wait."""
        out = {"sim": int(await self.redis.llen(self.keys.notify("sim")))}
        for key in await self.redis.keys(self.keys.wake("*")):
            out[as_text(key).rsplit(":", 1)[1]] = int(await self.redis.llen(key))
        return {name: n for name, n in out.items() if n}

    async def warm_ids(self, model: str = "sdxl") -> list[str]:
        return [
            as_text(w) for w in await self.redis.zrange(self.keys.warm_idle("sim", model), 0, -1)
        ]


def with_policies(broker: Broker, *policies: str) -> Broker:
    return Broker(broker.redis, replace(broker.settings, scheduling_policies=policies))


@pytest.fixture
def pool(broker: Broker) -> Pool:
    return Pool(with_policies(broker, "affinity"))


@pytest.fixture
async def blocking(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=None)
    yield client
    await client.aclose()


# -- who is woken ----------------------------------------------------------------------------------


async def test_a_job_preferring_a_model_wakes_the_idle_worker_that_has_it_warm(pool: Pool) -> None:
    await pool.idle("cold", COLD)
    await pool.idle("warm", SDXL_WARM)
    assert await pool.warm_ids() == ["warm"]
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await pool.rung() == {"warm": 1}
    claim = await pool.broker.claim("warm", SDXL_WARM)
    assert isinstance(claim, Claim)
    assert claim.job.id == "j"


async def test_the_woken_worker_blocking_on_its_doorbell_wakes(pool: Pool, blocking: Redis) -> None:
    await pool.idle("warm", SDXL_WARM)
    waiter = Broker(blocking, pool.broker.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="warm"))
    await wait_until(lambda: _blocked(pool.redis), timeout=5)
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await asyncio.wait_for(woken, 5) == 0


async def test_a_job_whose_models_come_from_its_payload_wakes_the_warm_worker_too(
    pool: Pool,
) -> None:
    comfy_warm = caps(("comfyui",), warm_models=["sd_xl_base_1.0.safetensors"])
    await pool.idle("warm", comfy_warm)
    workflow = {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
        }
    }
    await pool.broker.submit(job("comfyui", id="j", payload={"workflow": workflow}))
    assert await pool.redis.llen(pool.keys.wake("warm")) == 1
    assert await pool.redis.llen(pool.keys.notify("comfyui")) == 0


async def test_a_woken_worker_is_not_woken_again_for_the_next_job(pool: Pool) -> None:
    await pool.idle("warm-a", SDXL_WARM)
    await pool.idle("warm-b", SDXL_WARM)
    for n in range(3):
        await pool.broker.submit(job(id=f"j{n}", requirements={"models": ["sdxl"]}))
    # One warm worker per job while warm ones are idle, then the service's doorbell.
    assert await pool.rung() == {"warm-a": 1, "warm-b": 1, "sim": 1}
    assert await pool.warm_ids() == []


async def test_a_batch_wakes_one_warm_worker_per_job_and_rings_the_service_for_the_rest(
    pool: Pool,
) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.broker.submit_many(
        [
            job(id="a", requirements={"models": ["sdxl"]}),
            job(id="b", requirements={"models": ["sdxl"]}),
            job(id="c"),
        ]
    )
    assert await pool.rung() == {"warm": 1, "sim": 2}


async def test_a_released_job_wakes_a_warm_idle_worker(pool: Pool) -> None:
    await pool.broker.register_worker("busy", COLD)
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    claim = await pool.broker.claim("busy", COLD)
    assert isinstance(claim, Claim)
    await pool.idle("warm", SDXL_WARM)
    await pool.redis.delete(pool.keys.notify("sim"))
    assert await pool.broker.release("busy", "j", claim.token, "stopping") == "ok"
    assert await pool.rung() == {"warm": 1}


async def test_the_smallest_warm_worker_is_woken_first(pool: Pool) -> None:
    await pool.idle(
        "h100", caps(hardware={"gpus": [gpu(80)]}, models=["sdxl"], warm_models=["sdxl"])
    )
    await pool.idle(
        "4090", caps(hardware={"gpus": [gpu(24)]}, models=["sdxl"], warm_models=["sdxl"])
    )
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await pool.rung() == {"4090": 1}


# -- falling back to the service's doorbell --------------------------------------------------------


async def test_a_job_without_preferred_models_rings_the_service(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.broker.submit(job(id="j"))
    assert await pool.rung() == {"sim": 1}


async def test_a_job_preferring_a_model_nobody_has_warm_rings_the_service(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.broker.submit(job(id="j", requirements={"models": ["flux"]}))
    await pool.broker.submit(job(id="k", requirements={"models": ["sdxl", "flux"]}))
    assert await pool.rung() == {"sim": 2}


async def test_a_warm_worker_that_cannot_run_the_job_is_not_woken(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    big = {"models": ["sdxl"], "hardware": {"gpu": {"memory_gb": 40}}}
    await pool.broker.submit(job(id="j", requirements=big))
    await pool.broker.submit(job("comfyui", id="k", requirements={"models": ["sdxl"]}))
    assert await pool.rung() == {"sim": 1}
    assert await pool.redis.llen(pool.keys.notify("comfyui")) == 1


async def test_a_warm_worker_whose_heartbeat_lapsed_is_not_woken(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.redis.zadd(pool.keys.workers, {"warm": 1})  # lapsed, not reaped yet
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await pool.rung() == {"sim": 1}


async def test_a_paused_warm_worker_is_not_woken(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    assert await pool.broker.set_worker_state("warm", "paused")
    await pool.redis.delete(pool.keys.notify("sim"))  # set_worker_state rings on resume only
    await pool.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await pool.rung() == {"sim": 1}


async def test_with_affinity_off_a_warm_worker_is_not_indexed_and_the_service_rings(
    broker: Broker,
) -> None:
    plain = Pool(with_policies(broker, "fit", "fair"))
    await plain.idle("warm", SDXL_WARM)
    assert await plain.warm_ids() == []
    await plain.broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await plain.rung() == {"sim": 1}


# -- the index is emptied where the idle index is --------------------------------------------------


async def test_a_successful_claim_takes_the_worker_out_of_the_warm_index(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.broker.submit(job(id="j"))
    assert isinstance(await pool.broker.claim("warm", SDXL_WARM), Claim)
    assert await pool.warm_ids() == []
    assert await pool.redis.hget(pool.keys.worker("warm"), "idle_warm") is None


async def test_deregistering_takes_the_worker_out_of_the_warm_index(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.broker.deregister_worker("warm")
    assert await pool.warm_ids() == []


async def test_the_reaper_takes_a_dead_worker_out_of_the_warm_index(pool: Pool) -> None:
    await pool.idle("warm", SDXL_WARM)
    await pool.redis.zadd(pool.keys.workers, {"warm": 1})
    await pool.broker.reap()
    assert await pool.warm_ids() == []


@pytest.mark.parametrize("state", ["paused", "draining"])
async def test_pausing_or_draining_takes_the_worker_out_of_the_warm_index(
    pool: Pool, state: str
) -> None:
    await pool.idle("warm", SDXL_WARM)
    assert await pool.broker.set_worker_state("warm", state)  # type: ignore[arg-type]
    assert await pool.warm_ids() == []


async def test_a_model_no_longer_warm_leaves_the_index_at_the_next_empty_claim(pool: Pool) -> None:
    await pool.idle("w", SDXL_WARM)
    flux_warm = caps(hardware={"gpus": [gpu(24)]}, models=["sdxl", "flux"], warm_models=["flux"])
    assert await pool.broker.claim("w", flux_warm) == NoClaim("empty", None)
    assert await pool.warm_ids("sdxl") == []
    assert await pool.warm_ids("flux") == ["w"]


async def _blocked(redis: RedisClient) -> bool:
    return int((await redis.info("clients"))["blocked_clients"]) > 0
