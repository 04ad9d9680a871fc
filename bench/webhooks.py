"""Benchmark: webhook deliveries per second through the hubs, and event-to-delivery latency.

Starts a private Redis and one, then two, `python -m hub` processes with HUB_WEBHOOK_URL
pointing at a receiver in this process (a minimal HTTP/1.1 server on loopback answering
204 at once, keep-alive), subscribed to `accepted` events: each submission is one delivery.
Jobs are submitted straight into Redis in batches (far faster than delivery), so the rate
measured is the hubs' delivery rate: consumer-group reads, the signature, the POST over a
kept-alive connection, the acknowledgement. Latency is measured one job at a time, from
the submission returning to the delivery arriving.

No target: webhooks are a notification path, not the claim path. A receiver slower than
this one bounds the rate by HUB_WEBHOOK_CONCURRENCY / its answer time per hub instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import bench_client, hub_processes, machine, percentile, table
from shared.broker import Broker
from shared.embedded_redis import EmbeddedRedis
from shared.job import JobRequest

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(b"emp-redis benchmark-only secret!").decode()
CONCURRENCY = 64  # HUB_WEBHOOK_CONCURRENCY, the default


class Receiver:
    """Counts deliveries and notes when each arrived; answers 204 with keep-alive."""

    def __init__(self) -> None:
        self.count = 0
        self.arrived: list[float] = []
        self._changed = asyncio.Event()
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.count += 1
                self.arrived.append(time.perf_counter())
                self._changed.set()
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.count} of {count} deliveries arrived")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()


@contextlib.contextmanager
def _hubs(redis_url: str, receiver_url: str, count: int) -> Iterator[None]:
    with hub_processes(
        redis_url,
        count,
        HUB_AUTH="off",
        HUB_ACCESS_LOG="false",
        HUB_WEBHOOK_SECRET=SECRET,
        HUB_WEBHOOK_URL=receiver_url,
        HUB_WEBHOOK_EVENTS="accepted",
        HUB_WEBHOOK_ALLOW="127.0.0.1/32",
        HUB_WEBHOOK_CONCURRENCY=str(CONCURRENCY),
    ):
        yield None


async def _throughput(broker: Broker, receiver: Receiver, jobs: int) -> float:
    """Deliveries/s for `jobs` submissions made as fast as Redis takes them."""
    start_count = receiver.count
    requests = [JobRequest(service_type="bench-hook") for _ in range(jobs)]
    started = time.perf_counter()
    for i in range(0, jobs, 1000):
        await broker.submit_many(requests[i : i + 1000])
    await receiver.wait_for(start_count + jobs, timeout=300)
    return jobs / (receiver.arrived[-1] - started)


async def _latency(broker: Broker, receiver: Receiver, samples: int) -> list[float]:
    """ms from a submission returning to its delivery arriving, one job at a time."""
    out = []
    for _ in range(samples):
        expected = receiver.count + 1
        await broker.submit(JobRequest(service_type="bench-hook"))
        submitted = time.perf_counter()
        await receiver.wait_for(expected, timeout=30)
        out.append((receiver.arrived[expected - 1] - submitted) * 1000)
    return out


async def measure(quick: bool) -> str:
    jobs = 2000 if quick else 10_000
    samples = 100 if quick else 500
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="emp-bench-webhooks-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=False)
        redis_url = server.start()
        client = bench_client(redis_url)
        receiver = Receiver()
        await receiver.start()
        try:
            broker = Broker(client)
            for hubs in (1, 2):
                with _hubs(redis_url, receiver.url, hubs):
                    await _throughput(broker, receiver, 200)  # warm-up: connections, scripts
                    rate = await _throughput(broker, receiver, jobs)
                    rows.append([f"deliveries, {hubs} hub(s), {jobs:,} events", rate, "per s"])
                    if hubs == 1:
                        lat = await _latency(broker, receiver, samples)
                        rows.append(["event -> delivered, p50", percentile(lat, 50), "ms"])
                        rows.append(["event -> delivered, p99", percentile(lat, 99), "ms"])
                await client.flushall()
        finally:
            await receiver.stop()
            await client.aclose()
            server.stop()
    title = (
        f"webhooks: hub processes delivering to a loopback receiver (204 at once, keep-alive), "
        f"HUB_WEBHOOK_CONCURRENCY={CONCURRENCY}, Redis without AOF; {machine()}"
    )
    return table(title, ["what", "value", "unit"], rows)


async def run(quick: bool) -> str:
    """Entry point for `python -m bench webhooks`."""
    return await measure(quick)


if __name__ == "__main__":
    print(asyncio.run(measure("--quick" in sys.argv)), flush=True)
