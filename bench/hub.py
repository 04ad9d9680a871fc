"""Benchmark: `POST /jobs` submissions per second through ONE hub process.

Starts a private Redis (shared.embedded_redis, AOF everysec like the hub's default) and
`python -m hub` as a separate process (uvicorn, one worker process), then drives it with
1, 10 and 50 concurrent httpx clients for a fixed time each and prints throughput and
p50/p99 latency. The clients run in their own processes so the benchmark's HTTP client
does not share a CPU-bound event loop with the measurement (on a small box they still
share the cores with the hub and Redis, which is what a co-located deployment sees).

Target (docs/ARCHITECTURE.md#performance-targets): > 3,000 submissions/s on one hub process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import redis

from bench.common import hub_processes, machine, table
from shared.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-client-token"
CONCURRENCY = (1, 10, 50)
BODY = b'{"service_type":"comfyui","priority":50,"payload":{"prompt":"a cat","steps":20}}'


@dataclass(frozen=True)
class Result:
    clients: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    hub_cpu_s: float = 0.0
    percentiles: tuple[float, float] | None = None  # (p50, p99) when the tool reports them

    @property
    def cpu_us_per_request(self) -> float:
        """Hub process CPU per request: what bounds one hub on a dedicated core."""
        done = self.ok + self.errors
        return self.hub_cpu_s / done * 1e6 if done else float("nan")

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if self.percentiles is not None:
            return self.percentiles[0] if p == 50 else self.percentiles[1]
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def _client_loop(url: str, tasks: int, seconds: float) -> tuple[int, int, list[float]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    ok = errors = 0
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        deadline = time.perf_counter() + seconds

        async def one() -> None:
            nonlocal ok, errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await http.post("/jobs", content=BODY, headers=headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code == 201:
                    ok += 1
                else:
                    errors += 1

        await asyncio.gather(*(one() for _ in range(tasks)))
    return ok, errors, latencies


def _client_process(url: str, tasks: int, seconds: float) -> tuple[int, int, list[float]]:
    return asyncio.run(_client_loop(url, tasks, seconds))


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(url: str, clients: int, seconds: float, hub: psutil.Process) -> Result:
    """`clients` concurrent requests in flight, spread over up to 2 client processes."""
    procs = min(2, clients)
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        # Each client process runs for `seconds` from its own start; process start-up is
        # outside the measured window.
        cpu_before = _cpu(hub)
        parts = pool.starmap(_client_process, [(url, n, seconds) for n in shares])
        cpu = _cpu(hub) - cpu_before
    latencies = [x for _, _, lat in parts for x in lat]
    return Result(
        clients=clients,
        ok=sum(p[0] for p in parts),
        errors=sum(p[1] for p in parts),
        seconds=seconds,
        latencies_ms=latencies,
        hub_cpu_s=cpu,
    )


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""


def _wrk_ms(text: str, label: str) -> float:
    """A latency from wrk's --latency table, e.g. '99%    2.63ms' -> 2.63."""
    match = re.search(rf"^\s*{label}\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        return float("nan")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
    return float(match.group(1)) * scale


def measure_wrk(url: str, clients: int, seconds: float, hub: psutil.Process, tmp: Path) -> Result:
    """The same load from wrk, a C load generator: the Python clients above use more CPU
    than the hub itself, and on two cores that caps what they can show."""
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=BODY.decode(), token=TOKEN))
    cpu_before = _cpu(hub)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/jobs",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = _cpu(hub) - cpu_before
    done = re.search(r"^\s*(\d+) requests in", out, re.M)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(done.group(1)) if done else 0
    errors = int(bad.group(1)) if bad else 0
    p50, p99 = _wrk_ms(out, "50%"), _wrk_ms(out, "99%")
    return Result(clients, total - errors, errors, seconds, [p50, p99], cpu, percentiles=(p50, p99))


def _stack() -> str:
    """Which HTTP parser and event loop uvicorn picks up ('auto' prefers the fast ones)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} + {loop}"


def measure_all(quick: bool) -> str:
    """Start Redis and one hub process, run every concurrency level, return the table."""
    seconds = 2.0 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="emp-bench-hub-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        redis_url = server.start()
        try:
            with hub_processes(redis_url, HUB_AUTH_TOKEN=TOKEN) as [hub]:
                url = hub.url
                hub_proc = psutil.Process(hub.proc.pid)
                measure(url, 10, 0.5, hub_proc)  # warm-up: connections, script cache, imports
                if shutil.which("wrk"):
                    loader = "wrk"
                    results = [
                        measure_wrk(url, n, seconds, hub_proc, Path(tmp)) for n in CONCURRENCY
                    ]
                else:
                    loader = (
                        "httpx clients in 2 processes (install wrk for a lighter load generator)"
                    )
                    results = [measure(url, n, seconds, hub_proc) for n in CONCURRENCY]
            with redis.Redis.from_url(redis_url) as r:
                stored = int(r.zcard("jobs:pending"))
        finally:
            server.stop()
    rows: list[list[object]] = [
        [r.clients, r.ok, r.errors, r.rate, r.pct(50), r.pct(99), r.cpu_us_per_request]
        for r in results
    ]
    best = max(r.rate for r in results)
    cpu = min(r.cpu_us_per_request for r in results)
    title = (
        f"hub POST /jobs: one hub process (uvicorn, {_stack()}), embedded Redis with AOF "
        f"everysec, {seconds:g} s per row, LOG_LEVEL=warning, load from {loader}; {machine()}"
    )
    text = table(
        title,
        ["clients", "requests", "errors", "subm/s", "p50 ms", "p99 ms", "hub CPU us/req"],
        rows,
    )
    return (
        f"{text}\nbest {best:,.0f} submissions/s (target > 3,000/s); at {cpu:.0f} us of hub CPU "
        f"per request one dedicated core allows ~{1e6 / cpu:,.0f}/s; jobs stored: {stored:,}"
    )


async def run(quick: bool) -> str:
    """Entry point for `python -m bench hub` (the blocking work runs in a thread)."""
    return await asyncio.to_thread(measure_all, quick)


def main(quick: bool = False) -> None:
    print(measure_all(quick), flush=True)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
