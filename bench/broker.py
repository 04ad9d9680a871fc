"""Broker API throughput and latency, with capability matching on.

Every job carries requirements and every claim sends real capabilities, so the numbers
include matching. Jobs are no-ops: the worker claims and completes at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import (
    bench_client,
    median,
    percentile,
    private_redis,
    private_replicated_redis,
    table,
)
from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.settings import BrokerSettings
from shared.validation import convert

REQUEST = convert(
    {
        "service_type": "sim",
        "customer_id": "bench",
        "priority": 50,
        "payload": {"steps": 0},
        "requirements": {"hardware": {"gpu": {"memory_gb": 16}}, "models": ["sdxl"]},
    },
    JobRequest,
)
OFFER = convert(
    {
        "services": ["sim"],
        "hardware": {"gpus": [{"memory_gb": 24, "name": "RTX 4090"}], "cpu_cores": 8},
        "models": ["sdxl", "flux"],
    },
    Capabilities,
)


async def _submit_one_at_a_time(broker: Broker, n: int, clients: int) -> float:
    per = n // clients

    async def client() -> None:
        for _ in range(per):
            await broker.submit(REQUEST)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return per * clients / (time.perf_counter() - started)


async def _submit_batched(broker: Broker, n: int, batch: int) -> float:
    started = time.perf_counter()
    for _ in range(n // batch):
        await broker.submit_many([REQUEST] * batch)
    return (n // batch) * batch / (time.perf_counter() - started)


async def _drain(broker: Broker, n: int, concurrency: int) -> float:
    for _ in range(n // 1000):
        await broker.submit_many([REQUEST] * 1000)
    caps = broker.encode_capabilities(OFFER)
    done = 0

    async def slot() -> None:
        nonlocal done
        while isinstance(claim := await broker.claim("drain", caps), Claim):
            await broker.complete("drain", claim.job.id, claim.token, None)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def _round_trips(url: str, broker: Broker, n: int) -> list[float]:
    """Submit one job at a time to an idle worker blocked on the wake-up list; the client
    waits for the job's `completed` event on the events stream. The worker is registered
    and accepts handoffs, as worker/runtime.py: a submission hands it the job."""
    worker_redis = bench_client(url)
    worker = Broker(worker_redis, broker.settings, handoff=True)
    caps = broker.encode_capabilities(OFFER)
    stop = asyncio.Event()
    await worker.register_worker("rt", OFFER)

    async def idle_worker() -> None:
        beat = time.monotonic()
        while not stop.is_set():
            woken = await worker.wait_for_work(["sim"], timeout=0.5, worker_id="rt")
            result: Claim | NoClaim
            if isinstance(woken, Claim):
                result = woken  # handed over: no claim call
            else:
                result = await worker.claim("rt", caps, hops=woken or 0)
            while isinstance(result, Claim):
                # As the runtime's job runner: the completion claims the next job in the same
                # call, so a worker that finds nothing is idle when its result is visible.
                _, result = await worker.complete_and_claim(
                    "rt", result.job.id, result.token, {"ok": True}, caps
                )
            if time.monotonic() - beat > 1.0:  # stay live (a lapsed worker is not idle)
                await worker.heartbeat("rt")
                beat = time.monotonic()

    task = asyncio.create_task(idle_worker())
    samples = []
    top = await broker.redis.xrevrange(broker.keys.events, count=1)
    # Not "$": the first events may land before the first XREAD starts.
    last_id: Any = top[0][0] if top else b"0-0"
    for _ in range(n):
        t0 = time.perf_counter()
        submitted = await broker.submit(REQUEST)
        target = submitted.job_id.encode()
        finished = False
        while not finished:
            reply: Any = await broker.redis.xread({broker.keys.events: last_id}, block=1000)
            for _, entries in reply:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if fields.get(b"job") == target and fields.get(b"type") == b"completed":
                        finished = True
        samples.append((time.perf_counter() - t0) * 1000)
    stop.set()
    await task
    await worker_redis.aclose()
    return samples


async def run(quick: bool) -> str:
    n = 5_000 if quick else 50_000
    rows: list[list[object]] = []
    async with private_redis() as (url, redis):
        broker = Broker(redis)
        one = await _submit_one_at_a_time(broker, n, 1)
        rows.append(["submit, one at a time, 1 client", one, "jobs/s", "> 10,000"])
        ten = await _submit_one_at_a_time(broker, n, 10)
        rows.append(["submit, one at a time, 10 clients", ten, "jobs/s", ""])
        batched = await _submit_batched(broker, n, 500)
        rows.append(["submit, batched (500)", batched, "jobs/s", "> 30,000"])
        await redis.flushall()
        for concurrency in (1, 10, 50):
            rate = await _drain(broker, n, concurrency)
            rows.append([f"drain, concurrency {concurrency}", rate, "jobs/s", "> 4,700"])
            await redis.flushall()
        samples = await _round_trips(url, broker, 300 if quick else 2000)
        rows.append(["submit -> result visible, p50", median(samples), "ms", "< 0.75"])
        rows.append(["submit -> result visible, p99", percentile(samples, 99), "ms", "< 2"])
    rows += await _with_a_replica(quick)
    title = "broker: one process, Redis on loopback, matching on"
    return table(title, ["what", "value", "unit", "target"], rows)


async def _with_a_replica(quick: bool) -> list[list[object]]:
    """What REDIS_WAIT_REPLICAS=1 costs: the same calls against a primary with one replica,
    each state change waiting (EVALSHA + WAIT, one round trip) until the replica has it."""
    n = 2_000 if quick else 20_000
    label = "WAIT 1 replica:"
    rows: list[list[object]] = []
    async with private_replicated_redis() as (url, redis):
        # The replica's own cost (the primary feeds it), without waiting for it.
        plain = Broker(redis)
        one = await _submit_one_at_a_time(plain, n, 1)
        rows.append(["replica, no WAIT: submit, one at a time, 1 client", one, "jobs/s", ""])
        await redis.flushall()
        rate = await _drain(plain, n, 10)
        rows.append(["replica, no WAIT: drain, concurrency 10", rate, "jobs/s", ""])
        await redis.flushall()
        broker = Broker(redis, BrokerSettings(wait_replicas=1))
        one = await _submit_one_at_a_time(broker, n, 1)
        rows.append([f"{label} submit, one at a time, 1 client", one, "jobs/s", ""])
        ten = await _submit_one_at_a_time(broker, n, 10)
        rows.append([f"{label} submit, one at a time, 10 clients", ten, "jobs/s", ""])
        batched = await _submit_batched(broker, n, 500)
        rows.append([f"{label} submit, batched (500)", batched, "jobs/s", ""])
        await redis.flushall()
        rate = await _drain(broker, n, 10)
        rows.append([f"{label} drain, concurrency 10", rate, "jobs/s", ""])
        await redis.flushall()
        samples = await _round_trips(url, broker, 300 if quick else 2000)
        rows.append([f"{label} submit -> result visible, p50", median(samples), "ms", ""])
        rows.append([f"{label} submit -> result visible, p99", percentile(samples, 99), "ms", ""])
    return rows
