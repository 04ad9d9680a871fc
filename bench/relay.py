"""The least a job's round trip through Redis costs with two processes: the floor of the
side-by-side W3 row (submit, the idle worker runs the job, the result is seen).

A producer pushes a value onto a list and blocks on a second list; a worker process blocked
on the first list pushes the value onto the second. That is the shape of any Redis job
queue's round trip with an idle worker (a write, a blocked worker woken, a write, a blocked
reader woken) with nothing else: no script, no job record, no event. Measured with the same
client stack on both sides, synchronous redis-py (as the synchronous peers use) or redis-py's
asyncio client (as the broker uses).

A third shape, `events`, is W3 as the side-by-side benchmark's adapter for this project reads
it, with the least scripts that shape allows (redis-py's asyncio client on both sides, the
worker's side on the worker's own event loop, uvloop where installed). The client's one call
writes a job hash, its 'accepted' and 'claimed' events and the job's id onto the worker's list
(the handoff); it then reads the events stream from where it last read, as the hub does: a
first XREAD returns those two events at once, a second one blocks until 'completed'. The
worker pops the id and makes one call that writes the hash and the 'completed' event. What
this project's scripts do beyond that (matching, leases, fencing, statistics, indexes) is
ours to cut; this shape is not.

    python -m bench.relay URL sync|asyncio|events    # the worker side, until it reads "stop"
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any, Literal

import redis
from redis.asyncio import Redis

from shared.event_loop import run_loop

Stack = Literal["sync", "asyncio", "events"]
JOBS, RESULTS = "relay:jobs", "relay:results"
EVENTS = "relay:events"
# The events shape's two calls: the least a submission handed to an idle worker writes (the
# job, two events, the handoff), and the least a completion writes (the job, one event).
SUBMIT = """
redis.call('HSET', KEYS[1], 'status', 'active', 'worker_id', 'relay')
redis.call('XADD', KEYS[2], '*', 'type', 'accepted', 'job', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'type', 'claimed', 'job', ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
"""
COMPLETE = """
redis.call('HSET', KEYS[1], 'status', 'completed')
redis.call('XADD', KEYS[2], '*', 'type', 'completed', 'job', ARGV[1])
return 1
"""
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


async def _serve_events(url: str) -> None:
    client = Redis.from_url(url)
    try:
        complete = await client.script_load(COMPLETE)
        while True:
            popped: Any = await client.blpop([JOBS])  # blocking: never None
            job: bytes = popped[1]
            if job == STOP:
                return
            await client.evalsha(complete, 2, b"relay:job:" + job, EVENTS, job)
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


async def _events_round_trips(url: str, n: int) -> list[float]:
    out = []
    client = Redis.from_url(url)
    try:
        submit = await client.script_load(SUBMIT)
        last = b"0-0"
        for i in range(n):
            job = str(i).encode()
            started = time.perf_counter()
            await client.evalsha(submit, 3, b"relay:job:" + job, EVENTS, JOBS, job)
            done = False
            while not done:
                reply: Any = await client.xread({EVENTS: last}, block=WAIT_S * 1000)
                if not reply:
                    raise TimeoutError("the relay worker did not answer")
                for _, entries in reply:
                    for entry_id, fields in entries:
                        last = entry_id
                        done = done or (fields[b"job"], fields[b"type"]) == (job, b"completed")
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
        elif stack == "events":
            times = await _events_round_trips(url, warm + n)
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
    elif stack == "events":
        run_loop(_serve_events(url))  # the worker's own loop (uvloop where installed)
    else:
        asyncio.run(_serve_async(url))


if __name__ == "__main__":
    main(sys.argv[1:])
