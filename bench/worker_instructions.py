"""The instructions a real worker process runs per job, counted by valgrind's callgrind.

Timings of the worker's own Python move by tens of percent on a shared 2-core machine, more
than most changes to it are worth; an instruction count repeats within a few percent. The
worker is the real `python -m worker` (the simulation connector, zero-length steps) under
callgrind, and only a window of steady work is counted: callgrind_control zeroes the counts
once the worker is warm and dumps them once the window's jobs are done. Redis runs outside
valgrind. What callgrind counts is the process's own instructions, every thread's, not the
kernel's: the system calls of a round trip are not in it.

Two cases:
- drain, 1 slot: jobs queued while the worker idles, taken one at a time (each completion
  claims the next in the same call): what a one-slot W2 costs the worker per job;
- W3: one job at a time submitted to the idle 10-slot worker, handed to it, run, and
  completed: what a W3 sample of bench-peers costs the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.common import private_redis, table
from bench.instructions import callgrind_total
from bench.worker import next_event, registered, simulation_job, worker_process
from shared.broker import Broker

WARM_JOBS = 50  # run before counting: imports, first connections, caches
WORKER_ID = "counted"
DEADLINE_S = 600.0  # under callgrind a job costs about 50 times its usual time


@contextlib.asynccontextmanager
async def _counted_worker(url: str, slots: int, out: Path) -> AsyncIterator[int]:
    """A worker process under callgrind (bench.worker's, wrapped), counting nothing until
    zeroed; yields its pid. Heartbeats are spread out so that none falls into the counted
    window by chance."""
    callgrind = ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}"]
    async with worker_process(
        url,
        WORKER_ID,
        wrapper=callgrind,
        CONCURRENT_JOBS=str(slots),
        HEARTBEAT_INTERVAL_SECONDS="250",
        LEASE_TIMEOUT_SECONDS="600",
        PYTHONHASHSEED="0",
    ) as proc:
        yield proc.pid


async def _completed(redis: Redis, broker: Broker) -> int:
    return int(await redis.zcard(broker.keys.finished("completed")))


async def _until_completed(redis: Redis, broker: Broker, n: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while await _completed(redis, broker) < n:
        if loop.time() > deadline:
            raise RuntimeError(f"the counted worker completed fewer than {n} jobs in time")
        await asyncio.sleep(0.1)


def _control(*args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _counted(out: Path) -> int:
    """The instructions of the last dump (callgrind writes one file per dump: out.1, ...)."""
    dumps = sorted(out.parent.glob(out.name + ".*"))
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    return callgrind_total(dumps[-1])


async def _drain(
    url: str, redis: Redis, broker: Broker, n: int, out: Path, warm: int = WARM_JOBS
) -> float:
    async with _counted_worker(url, 1, out) as pid:
        await registered(redis, broker, WORKER_ID, DEADLINE_S)
        await broker.submit_many([simulation_job()] * warm)
        await _until_completed(redis, broker, warm)
        # The worker idles now, so the window holds exactly the n jobs below.
        _control("-z", str(pid))
        for start in range(0, n, 500):
            await broker.submit_many([simulation_job()] * min(500, n - start))
        await _until_completed(redis, broker, warm + n)
        _control("-d", str(pid))
    return _counted(out) / n


async def _w3(
    url: str, redis: Redis, broker: Broker, n: int, out: Path, warm: int = WARM_JOBS
) -> float:
    async with _counted_worker(url, 10, out) as pid:
        await registered(redis, broker, WORKER_ID, DEADLINE_S)
        top = await redis.xrevrange(broker.keys.events, count=1)
        last: list[Any] = [top[0][0] if top else b"0-0"]

        async def sample() -> None:
            submitted = await broker.submit(simulation_job())
            await next_event(redis, broker, last, submitted.job_id.encode(), b"completed")

        for _ in range(warm):
            await sample()
        _control("-z", str(pid))
        for _ in range(n):
            await sample()
        _control("-d", str(pid))
    return _counted(out) / n


async def run(quick: bool) -> str:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return "worker_instructions: skipped: valgrind is not installed (apt-get install valgrind)"
    n = 300 if quick else 1000
    rows = []
    for what, case in (("drain, 1 slot", _drain), ("W3: a job handed to the idle worker", _w3)):
        with tempfile.TemporaryDirectory(prefix="emp-bench-cg-") as tmp:
            async with private_redis() as (url, redis):
                per_job = await case(url, redis, Broker(redis), n, Path(tmp) / "callgrind.out")
        rows.append([what, n, f"{per_job / 1000:,.1f}k"])
    return table(
        "worker_instructions: the worker process's instructions per job (callgrind on the "
        "real worker, simulation connector; its own instructions, not the kernel's)",
        ["case", "jobs", "instructions/job"],
        rows,
    )
