"""A real worker process serving two pools (POOLS=gpu-eu,gpu-us): it registers in both and
runs what is submitted to either, straight to each pool's keys, no hub needed."""

from __future__ import annotations

import signal

import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.factories import job
from tests.process_support import output_of, registered, worker_process
from tests.worker_support import finished, sim

pytestmark = pytest.mark.e2e


async def test_a_worker_process_runs_the_jobs_of_every_pool_it_serves(
    redis: Redis, redis_url: str, broker_settings: BrokerSettings
) -> None:
    eu, us = (Broker(redis, broker_settings, pool=p) for p in ("gpu-eu", "gpu-us"))
    with worker_process(redis_url, "p1", POOLS="gpu-eu,gpu-us") as proc:
        for pool in (eu, us):
            await registered(redis, pool, "p1")
        ids = [
            (await pool.submit(job("simulation", payload=sim(result=pool.pool)))).job_id
            for pool in (eu, us, us, eu)
        ]
        for pool, job_id in zip((eu, us, us, eu), ids, strict=True):
            done = await finished(pool, job_id)
            assert (done.status, done.worker_id) == (JobStatus.COMPLETED, "p1")
            assert done.result is not None
            assert done.result["result"] == pool.pool
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = output_of(proc)
    assert "worker p1 registered" in log
    assert "pools gpu-eu,gpu-us" in log
    for pool in (eu, us):
        assert await redis.zscore(pool.keys.workers, "p1") is None  # deregistered from both
