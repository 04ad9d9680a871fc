"""The worker's own costs: wake-up latency, drain throughput, and what an idle fleet costs Redis.

Workers run as real `python -m worker` processes (the same code worker.pyz runs), except the
idle fleet, which runs 100 Worker objects in one process so that 100 interpreters do not
compete for two cores; each still has its own heartbeat thread and Redis connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from bench.common import hub_processes, median, percentile, private_redis, table
from shared.broker import Broker
from shared.job import JobRequest
from shared.scripts import SCRIPT_COMMANDS
from shared.validation import convert

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_TOKEN = "bench-operator-token"
WORKER_ENV = {
    "SERVICES": "simulation",
    "WORKER_DASHBOARD_ENABLED": "false",
    "WORKER_ENV_FILE": "/nonexistent/.env.worker",
    "LOG_LEVEL": "warning",
}


def simulation_job(steps: int = 1) -> JobRequest:
    """A job of the simulation connector that does nothing: `steps` steps of 0 ms."""
    body = {"service_type": "simulation", "payload": {"steps": steps, "step_ms": 0}}
    return convert(body, JobRequest)


@dataclass(frozen=True)
class Link:
    """How the benchmarked worker reaches the broker: Redis itself, or a hub's gateway."""

    name: str
    hub_url: str | None = None  # None: direct, over Redis

    async def worker_env(self, redis_url: str, worker_id: str, slots: int) -> dict[str, str]:
        if self.hub_url is None:
            return {"HUB_REDIS_URL": redis_url, "WORKER_ID": worker_id}
        grant = {"worker_id": worker_id, "services": ["simulation"], "max_concurrency": slots}
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with httpx.AsyncClient(base_url=self.hub_url, headers=headers) as http:
            issued = await http.post("/gateway/grants", json=grant)
        issued.raise_for_status()
        return {"WORKER_GATEWAY_URL": self.hub_url, "WORKER_GATEWAY_TOKEN": issued.json()["token"]}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the graceful stop that hub and worker promise; SIGKILL past 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def worker_process(
    url: str,
    worker_id: str,
    link: Link = Link("direct"),
    *,
    wrapper: Sequence[str] = (),
    **env: str,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A `python -m worker` process reaching the broker by `link`, with `env` on top of
    WORKER_ENV, run by `wrapper` if given (e.g. valgrind); stopped gracefully on leaving."""
    slots = int(env.get("CONCURRENT_JOBS", "1"))
    reach = await link.worker_env(url, worker_id, slots)
    full = {**os.environ, **WORKER_ENV, **reach, **env}
    if link.hub_url is not None:  # a gateway worker must hold no Redis URL at all
        for name in ("HUB_REDIS_URL", "REDIS_URL"):
            full.pop(name, None)
    full["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([*wrapper, sys.executable, "-m", "worker"], env=full, cwd=ROOT)
    try:
        yield proc
    finally:
        _stop(proc)


async def registered(redis: Redis, broker: Broker, worker_id: str, within: float = 30) -> None:
    """Wait until `worker_id` has registered, `within` seconds at most."""
    deadline = time.monotonic() + within
    while await redis.zscore(broker.keys.workers, worker_id) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {worker_id} did not register")
        await asyncio.sleep(0.05)


async def next_event(
    redis: Redis, broker: Broker, last: list[Any], job: bytes, kind: bytes
) -> None:
    while True:
        reply: Any = await redis.xread({broker.keys.events: last[0]}, block=2000)
        for _, entries in reply:
            for entry_id, fields in entries:
                last[0] = entry_id
                if fields.get(b"job") == job and fields.get(b"type") == kind:
                    return


async def _claim_latency(url: str, redis: Redis, broker: Broker, n: int, link: Link) -> list[float]:
    samples = []
    worker_id = f"latency-{link.name}"
    async with worker_process(url, worker_id, link):
        await registered(redis, broker, worker_id)
        await asyncio.sleep(0.5)  # let it settle into its idle wait (benchmark pacing only)
        # Start after the newest entry now, not at "$" on each read: the claim can land
        # before the first XREAD starts, and "$" would then miss it.
        top = await redis.xrevrange(broker.keys.events, count=1)
        last: list[Any] = [top[0][0] if top else b"0-0"]
        for _ in range(n):
            t0 = time.perf_counter()
            submitted = await broker.submit(simulation_job())
            await next_event(redis, broker, last, submitted.job_id.encode(), b"claimed")
            samples.append((time.perf_counter() - t0) * 1000)
            await next_event(redis, broker, last, submitted.job_id.encode(), b"completed")
    return samples


async def _drain(url: str, redis: Redis, broker: Broker, n: int, slots: int, link: Link) -> float:
    for _ in range(n // 1000):
        await broker.submit_many([simulation_job()] * 1000)
    started = time.perf_counter()
    worker_id = f"drain{slots}-{link.name}"
    async with worker_process(url, worker_id, link, CONCURRENT_JOBS=str(slots)):
        while await redis.zcard(broker.keys.finished("completed")) < n:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return n / elapsed


# What clients send. Redis also counts the commands a Lua script runs inside FCALL or
# EVALSHA in its statistics; those are not round trips and are left out here.
CLIENT_COMMANDS = (
    *SCRIPT_COMMANDS,
    "eval",
    "blpop",
    "ping",
    "subscribe",
    "hello",
    "client|setinfo",
)


async def _client_calls(redis: Redis) -> tuple[int, float]:
    stats = await redis.info("commandstats")
    calls = sum(int(stats.get(f"cmdstat_{c}", {"calls": 0})["calls"]) for c in CLIENT_COMMANDS)
    cpu = await redis.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def _idle_fleet(url: str, redis: Redis, workers: int, seconds: float) -> tuple[float, float]:
    """Client commands per second and Redis CPU share of an idle fleet of `workers`."""
    from worker.cli import detect_hardware, load_connectors
    from worker.runtime import Worker
    from worker.settings import WorkerSettings

    fleet = []
    for i in range(workers):
        env = {**WORKER_ENV, "HUB_REDIS_URL": url, "WORKER_ID": f"idle{i}"}
        settings = WorkerSettings.from_env(env)
        fleet.append(Worker(settings, load_connectors(settings), detect_hardware(settings)))
    tasks = [asyncio.create_task(w.run()) for w in fleet]
    while await redis.zcard("workers") < workers:
        await asyncio.sleep(0.1)
    await asyncio.sleep(6)  # past the first idle-poll period: measure the steady state
    calls_before, cpu_before = await _client_calls(redis)
    await asyncio.sleep(seconds)
    calls_after, cpu_after = await _client_calls(redis)
    for w in fleet:
        w.stop()
    await asyncio.gather(*tasks)
    return (calls_after - calls_before) / seconds, (cpu_after - cpu_before) / seconds * 100


async def run(quick: bool) -> str:
    rows: list[list[object]] = []
    async with private_redis() as (url, redis):
        broker = Broker(redis)
        with hub_processes(url, HUB_OPERATOR_TOKEN=OPERATOR_TOKEN, HUB_ACCESS_LOG="false") as [hub]:
            # The gateway's cost shows next to direct mode: the same worker, the same jobs,
            # one hub in between (it runs the scripts the worker would otherwise run itself).
            for link in (Link("direct"), Link("gateway", hub.url)):
                rows += await _link_rows(url, redis, broker, link, quick)
        idle, cpu = await _idle_fleet(url, redis, 100, 10 if quick else 30)
        rows.append(["100 idle workers: client commands", idle, "cmd/s", "< 100 (1,000 for 1,000)"])
        rows.append(["100 idle workers: Redis CPU", cpu, "% of a core", ""])
    title = "worker: real worker processes, simulation connector, Redis on loopback"
    return table(title, ["what", "value", "unit", "target"], rows)


async def _link_rows(
    url: str, redis: Redis, broker: Broker, link: Link, quick: bool
) -> list[list[object]]:
    where = "" if link.hub_url is None else " [through the hub gateway]"
    samples = await _claim_latency(url, redis, broker, 100 if quick else 500, link)
    rows: list[list[object]] = [
        [f"submit -> claimed, idle worker, p50{where}", median(samples), "ms", ""],
        [f"submit -> claimed, idle worker, p99{where}", percentile(samples, 99), "ms", ""],
    ]
    n = 2000 if quick else 20000
    for slots in (1, 10):
        await redis.flushall()
        rate = await _drain(url, redis, broker, n, slots, link)
        rows.append([f"drain, simulation step_ms=0, {slots} slot(s){where}", rate, "jobs/s", ""])
    await redis.flushall()
    return rows
