"""The least a job's round trip through Redis costs with two processes: the floor of the
side-by-side W3 row (submit, the idle worker runs the job, the result is seen).

A producer pushes a value onto a list and blocks on a second list; a worker process blocked
on the first list pushes the value onto the second. That is the shape of any Redis job
queue's round trip with an idle worker (a write, a blocked worker woken, a write, a blocked
reader woken) with nothing else: no script, no job record, no event. Measured with the same
client stack on both sides, synchronous redis-py (as the synchronous peers use) or redis-py's
asyncio client (as the broker uses).

    python -m bench.relay URL sync|asyncio    # the worker side, until it reads "stop"
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Literal

import redis
from redis.asyncio import Redis

Stack = Literal["sync", "asyncio"]
JOBS, RESULTS = "relay:jobs", "relay:results"
STOP = b"stop"
WAIT_S = 10  # a round trip longer than this means the worker is gone


def _serve_sync(url: str) -> None:
    with redis.Redis.from_url(url) as client:
        while True:
            _, value = client.blpop([JOBS])
            if value == STOP:
                return
            client.lpush(RESULTS, value)


async def _serve_async(url: str) -> None:
    client = Redis.from_url(url)
    try:
        while True:
            _, value = await client.blpop([JOBS])  # type: ignore[misc]  # blocking: never None
            if value == STOP:
                return
            await client.lpush(RESULTS, value)
    finally:
        await client.aclose()


def _sync_round_trips(url: str, n: int) -> list[float]:
    out = []
    with redis.Redis.from_url(url) as client:
        for i in range(n):
            started = time.perf_counter()
            client.lpush(JOBS, i)
            if client.blpop([RESULTS], timeout=WAIT_S) is None:
                raise TimeoutError("the relay worker did not answer")
            out.append((time.perf_counter() - started) * 1e6)
        client.lpush(JOBS, STOP)
    return out


async def _async_round_trips(url: str, n: int) -> list[float]:
    out = []
    client = Redis.from_url(url)
    try:
        for i in range(n):
            started = time.perf_counter()
            await client.lpush(JOBS, i)
            if await client.blpop([RESULTS], timeout=WAIT_S) is None:
                raise TimeoutError("the relay worker did not answer")
            out.append((time.perf_counter() - started) * 1e6)
        await client.lpush(JOBS, STOP)
    finally:
        await client.aclose()
    return out


async def round_trips_us(url: str, stack: Stack, n: int, warm: int = 100) -> list[float]:
    """`n` timed round trips (after `warm` untimed ones, which also wait for the worker
    process to start) through a worker process of the same `stack`, in microseconds."""
    worker = subprocess.Popen([sys.executable, "-m", "bench.relay", url, stack])
    try:
        if stack == "sync":
            times = await asyncio.to_thread(_sync_round_trips, url, warm + n)
        else:
            times = await _async_round_trips(url, warm + n)
        worker.wait(timeout=WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return times[warm:]


def main(argv: list[str]) -> None:
    url, stack = argv
    if stack == "sync":
        _serve_sync(url)
    else:
        asyncio.run(_serve_async(url))


if __name__ == "__main__":
    main(sys.argv[1:])
