"""Running real Worker objects in-process against the test Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from shared.broker import Broker
from shared.job import Job, JobStatus
from tests.helpers import wait_until
from worker.cli import detect_hardware, load_connectors
from worker.runtime import Worker
from worker.settings import WorkerSettings

FAST = {
    "LEASE_TIMEOUT_SECONDS": "2",
    "HEARTBEAT_INTERVAL_SECONDS": "0.2",
    "RETRY_BACKOFF_SECONDS": "0.05",
    "RETRY_BACKOFF_MAX_SECONDS": "0.1",
    "RETRY_AVOID_SECONDS": "0",
    "WORKER_DASHBOARD_ENABLED": "false",
    "WORKER_PROGRESS_INTERVAL_SECONDS": "0",
    "WORKER_HEALTH_INTERVAL_SECONDS": "0.2",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "5",
}


def worker_settings(redis_url: str, worker_id: str = "w1", **env: str) -> WorkerSettings:
    values = {"HUB_REDIS_URL": redis_url, "WORKER_ID": worker_id, "SERVICES": "simulation"}
    return WorkerSettings.from_env({**values, **FAST, **env})


def make_worker(settings: WorkerSettings, *, burst: bool = False) -> Worker:
    return Worker(settings, load_connectors(settings), detect_hardware(settings), burst=burst)


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings) -> AsyncIterator[Worker]:
    """A worker running in the background of this test's event loop, stopped at exit."""
    worker = make_worker(settings)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: worker.status in ("idle", "busy") or task.done(), timeout=10)
        if task.done():
            task.result()
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=20)


async def finished(broker: Broker, job_id: str, timeout: float = 10) -> Job:
    async def done() -> Job | None:
        job = await broker.get(job_id)
        return job if job is not None and job.status.terminal else None

    return await wait_until(done, timeout=timeout, message=f"job {job_id} finishes")


async def status_is(broker: Broker, job_id: str, status: JobStatus) -> Job:
    async def check() -> Job | None:
        job = await broker.get(job_id)
        return job if job is not None and job.status == status else None

    return await wait_until(check, timeout=10, message=f"job {job_id} becomes {status}")


def sim(**payload: Any) -> dict[str, Any]:
    return {"steps": 3, "step_ms": 1, **payload}


def env_of(settings: WorkerSettings) -> Mapping[str, str]:
    return settings.env
