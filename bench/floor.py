"""The round-trip floor: what one Redis round trip costs from each client stack, today.

The side-by-side benchmark (`bench peers`) compares a producer that awaits an asyncio
`Broker.submit` with peers whose producers are synchronous, and a job's round trip that
needs several Redis round trips. Whether a ratio target there is reachable depends on what
a single round trip costs from each stack on this machine, which varies more between days
than anything the code changes. This benchmark measures those floors in one run, on one
private Redis, so a missed target can be set against them:

* `redis-benchmark` PING, one client: the server and loopback alone (C client);
* redis-py synchronous PING: what a synchronous peer's one-command enqueue costs at least;
* a raw asyncio Protocol PING on the default event loop (and on uvloop where installed): the
  least any asyncio client can pay per awaited round trip;
* redis-py asyncio PING and EVALSHA of a script that returns at once: the client stack the
  broker uses;
* `Broker.submit` of a job without requirements, and Redis's own time for its script
  (INFO commandstats): the real cost, split into server and everything else;
* a relay between two processes (bench/relay.py), p50 and p99, synchronous and asyncio: the
  least a job's round trip through Redis with an idle worker costs, W3's floor;
* the same round trip in the shape the side-by-side W3 measures this project in (relay.py's
  `events`: the submission writes two events the client then reads at once, before a
  blocking read for the third), with the least scripts: W3's floor for this project there;
* a drain with one slot at its least: `Broker.complete_and_claim` in a loop, as a worker
  with one slot calls it, and nothing else (no connector, no bookkeeping), and Redis's own
  time for its script: W2-with-one-slot's floor. One slot cannot overlap its own work with
  Redis's, since the next job is the reply to the completion of the last, so a job costs
  at least this loop's time; what the real worker (`bench peers`) takes beyond it is the
  worker's own Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis
from redis.asyncio import Redis

from bench.common import median, percentile, private_redis, table
from bench.relay import round_trips_us
from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.scripts import script_call_stats
from shared.validation import convert

PING = b"*1\r\n$4\r\nPING\r\n"
W3_SHAPE = "W3 as bench-peers reads it, least scripts, redis-py asyncio"
DRAIN_WORKER = "floor-drain"
# W2's job and worker (bench-peers): no requirements; a worker without a GPU.
DRAIN_REQUEST = convert({"service_type": "floor", "payload": {}}, JobRequest)
DRAIN_OFFER = convert(
    {"services": ["floor"], "hardware": {"cpu_cores": 8, "ram_gb": 16}}, Capabilities
)


async def _per_call_us(call: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(min(n, 200)):  # warm the connection and the code path
        await call()
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - started) / n * 1e6


def _sync_ping_us(url: str, n: int) -> float:
    with redis.Redis.from_url(url) as client:
        for _ in range(200):
            client.ping()
        started = time.perf_counter()
        for _ in range(n):
            client.ping()
        return (time.perf_counter() - started) / n * 1e6


class _PingProtocol(asyncio.Protocol):
    """The least an asyncio client does per round trip: write, wake on data, resolve (a
    reply to PING arrives in one read on loopback)."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(data)


async def _raw_protocol_us(host: str, port: int, n: int) -> float:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_PingProtocol, host, port)

    async def ping() -> None:
        protocol.reply = loop.create_future()
        transport.write(PING)
        await protocol.reply

    try:
        return await _per_call_us(ping, n)
    finally:
        transport.close()


def _uvloop_protocol_us(host: str, port: int, n: int) -> float | None:
    try:
        import uvloop
    except ImportError:
        return None
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_raw_protocol_us(host, port, n))


def _redis_benchmark_us(port: int, n: int) -> float | None:
    """redis-benchmark's PING_MBULK p50 for one client, or None where it is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-p", str(port), "-t", "ping", "-n", str(n), "-c", "1", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    for line in out.replace("\r", "\n").splitlines():
        if line.startswith("PING_MBULK:") and "p50=" in line:
            return float(line.rsplit("p50=", 1)[1].split()[0]) * 1000
    return None


async def _script_usec(client: Redis) -> tuple[int, float]:
    return script_call_stats(await client.info("commandstats"))


async def _one_slot_drain_us(client: Redis, n: int) -> tuple[float, float]:
    """(µs per job, of which Redis µs) for `n` jobs drained by one slot: each completion
    claims the next job in the same call (shared/lua/complete_claim.lua), with the worker's
    default scheduling policies and handoffs on, as worker/runtime.py claims."""
    broker = Broker(client, handoff=True)
    await broker.register_worker(DRAIN_WORKER, DRAIN_OFFER)
    caps = broker.encode_capabilities(DRAIN_OFFER)
    for start in range(0, n + 1, 500):
        await broker.submit_many([DRAIN_REQUEST] * min(500, n + 1 - start))
    claim = await broker.claim(DRAIN_WORKER, caps)
    calls_before, usec_before = await _script_usec(client)
    started = time.perf_counter()
    for _ in range(n):
        if not isinstance(claim, Claim):
            raise RuntimeError(f"the drain found no job: {claim}")
        fence, claim = await broker.complete_and_claim(
            DRAIN_WORKER, claim.job.id, claim.token, 1, caps
        )
        if fence != "ok":
            raise RuntimeError(f"a completion was refused: {fence}")
    per_job = (time.perf_counter() - started) / n * 1e6
    calls_after, usec_after = await _script_usec(client)
    return per_job, (usec_after - usec_before) / max(calls_after - calls_before, 1)


async def run(quick: bool) -> str:
    return await measure(3_000 if quick else 20_000)


async def measure(n: int) -> str:
    """The table, from `n` calls per row."""
    rows: list[list[object]] = []
    async with private_redis() as (url, client):
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        bench = await asyncio.to_thread(_redis_benchmark_us, port, n)
        if bench is not None:
            rows.append(["redis-benchmark PING, 1 client (p50)", f"{bench:.1f}"])
        rows.append(["redis-py sync PING", f"{await asyncio.to_thread(_sync_ping_us, url, n):.1f}"])
        rows.append(["raw asyncio Protocol PING", f"{await _raw_protocol_us(host, port, n):.1f}"])
        uv = await asyncio.to_thread(_uvloop_protocol_us, host, port, n)
        if uv is not None:
            rows.append(["raw uvloop Protocol PING", f"{uv:.1f}"])
        rows.append(["redis-py asyncio PING", f"{await _per_call_us(client.ping, n):.1f}"])
        sha = await client.script_load("return 1")
        evalsha = await _per_call_us(lambda: client.evalsha(sha, 0), n)
        rows.append(["redis-py asyncio EVALSHA 'return 1'", f"{evalsha:.1f}"])

        broker = Broker(client)
        request = convert({"service_type": "floor", "payload": {}}, JobRequest)
        await broker.submit(request)  # loads the script
        calls_before, usec_before = await _script_usec(client)
        submit = await _per_call_us(lambda: broker.submit(request), n)
        calls_after, usec_after = await _script_usec(client)
        server = (usec_after - usec_before) / max(calls_after - calls_before, 1)
        rows.append(["Broker.submit, whole call", f"{submit:.1f}"])
        rows.append(["  of which Redis runs submit.lua", f"{server:.1f}"])
        # The relay is W3's floor; it needs no more samples than W3 takes (500) to settle.
        trips = min(n, 1_000)
        for stack in ("sync", "asyncio"):
            times = await round_trips_us(url, stack, trips)
            label = f"relay round trip, 2 processes, redis-py {stack}"
            rows.append([f"{label} (p50)", f"{median(times):.1f}"])
            rows.append([f"{label} (p99)", f"{percentile(times, 99):.1f}"])
        times = await round_trips_us(url, "events", trips)
        rows.append([f"{W3_SHAPE} (p50)", f"{median(times):.1f}"])
        rows.append([f"{W3_SHAPE} (p99)", f"{percentile(times, 99):.1f}"])
        drain, drain_server = await _one_slot_drain_us(client, min(n, 5_000))
        rows.append(
            ["drain, 1 slot: Broker.complete_and_claim per job, nothing else", f"{drain:.1f}"]
        )
        rows.append(["  of which Redis runs complete_claim.lua", f"{drain_server:.1f}"])
        with contextlib.suppress(Exception):
            await client.flushall()
    return table(
        f"floor: one round trip per client stack, µs per call ({n:,} calls each, loopback)",
        ["what", "µs"],
        rows,
    )
