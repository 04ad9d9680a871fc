"""What every benchmark needs: a private Redis, timing helpers and table printing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import redis
from redis.asyncio import Redis

from shared.embedded_redis import EmbeddedRedis, free_port
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HubProcess:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def hub_processes(redis_url: str, count: int = 1, **settings: str) -> Iterator[list[HubProcess]]:
    """`count` `python -m hub` processes on free ports of 127.0.0.1, ready (GET /ready), with
    the benchmark's `settings` and none inherited from this shell (HUB_*, WS_*, REDIS*);
    stopped on exit with the SIGTERM that a hub handles gracefully."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "WS_", "REDIS"))}
    extra_path = os.environ.get("PYTHONPATH")
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), extra_path) if p),
        REDIS_URL=redis_url,
        HUB_HOST="127.0.0.1",
        WS_PORT="0",
        HUB_MAINTENANCE="false",
        LOG_LEVEL="warning",
        **settings,
    )
    args = [sys.executable, "-m", "hub", "--env-file", "/nonexistent/.env.hub"]
    hubs: list[HubProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env={**env, "HUB_PORT": str(port)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            hubs.append(HubProcess(f"http://127.0.0.1:{port}", proc))
        for hub in hubs:
            _wait_ready(hub)
        yield hubs
    finally:
        for hub in hubs:
            hub.proc.terminate()
        for hub in hubs:
            try:
                hub.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hub.proc.kill()
                hub.proc.wait()


def _wait_ready(hub: HubProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"hub exited with code {hub.proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{hub.url}/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"hub at {hub.url} did not become ready")


def bench_client(url: str) -> Redis:
    """A client made as the hub's and the worker's are (shared.redis_client), without their
    read timeout: benchmarks block on purpose."""
    return connect_server(RedisSettings(url=url), blocking=True, max_connections=200)


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[tuple[str, Redis]]:
    """A fresh, non-persistent server on a free port, so numbers never depend on (or touch)
    whatever runs on 6379."""
    with tempfile.TemporaryDirectory(prefix="emp-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=False)
        url = server.start()
        client = bench_client(url)
        try:
            yield url, client
        finally:
            await client.aclose()
            server.stop()


@contextlib.asynccontextmanager
async def private_replicated_redis() -> AsyncIterator[tuple[str, Redis]]:
    """Like private_redis, with one replica attached and in sync (REPLICAOF, on loopback):
    what REDIS_WAIT_REPLICAS=1 waits for."""
    with tempfile.TemporaryDirectory(prefix="emp-bench-") as tmp:
        primary = EmbeddedRedis(Path(tmp) / "primary", appendonly=False)
        replica = EmbeddedRedis(Path(tmp) / "replica", appendonly=False)
        url = primary.start()
        try:
            with redis.Redis.from_url(replica.start()) as follower:
                follower.replicaof("127.0.0.1", primary.port)
                deadline = time.monotonic() + 30
                while follower.info("replication").get("master_link_status") != "up":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the replica did not sync within 30 s")
                    await asyncio.sleep(0.05)
            client = bench_client(url)
            try:
                yield url, client
            finally:
                await client.aclose()
        finally:
            replica.stop()
            primary.stop()


def percentile(samples: Sequence[float], pct: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    mem_gb = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {psutil.cpu_count()} CPUs ({cpu}), "
        f"{mem_gb:.0f} GiB RAM, Python {platform.python_version()}"
    )


def machine_speed(url: str) -> str:
    """How fast this machine is right now, to compare runs from different days: shared boxes
    vary by 2x or more, on CPU and even more on loopback round trips. The targets assume
    about 71 us per Redis round trip (~14k/s for one client)."""
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    loop_ms = (time.perf_counter() - started) * 1000
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        samples = []
        for _ in range(2000):
            sent = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - sent) * 1e6)
    finally:
        client.close()
    return (
        f"Python loop of 1,000,000 additions {loop_ms:.0f} ms; "
        f"Redis PING round trip p50 {median(samples):.0f} us (sync redis-py, loopback)"
    )


def measure_machine_speed() -> str:
    with tempfile.TemporaryDirectory(prefix="emp-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendonly=False)
        url = server.start()
        try:
            return machine_speed(url)
        finally:
            server.stop()


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in header], *[[fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "-" * len(title)]
    for n, row in enumerate(cells):
        padded = [
            c.ljust(w) if n == 0 or i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: object) -> str:
    """A table cell: floats to about three significant digits, thousands separated."""
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
