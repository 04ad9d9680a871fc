"""One replay: the trace submitted at its (compressed) arrival times to a fresh Redis, the
simulated fleet claiming from it, until every job has completed.

The submitting side is this process (one `submit_many` per 10 ms of due arrivals, with the
job id `row-N` so that records map back to rows); the fleet is `processes` spawned worker
processes (bench/fleet/workers.py). Redis's own time per claim comes from the slow log set
to record every command (threshold 0): the duration of each EVALSHA of the claim script,
which excludes the network and Python, as bench/claim.py's INFO reading does for one client.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.common import private_redis
from bench.fleet.fleet import CardSpec
from bench.fleet.trace import TraceJob
from bench.fleet.workers import JobRecord, read_records, worker_process
from shared.broker import Broker
from shared.job import JobRequest
from shared.lua_source import function_name, source
from shared.settings import BrokerSettings
from shared.text import as_text
from shared.validation import convert

SUBMIT_TICK_S = 0.01
SLOWLOG_POLL_S = 0.25
SLOWLOG_MAX_LEN = 10_000  # per poll: a few thousand commands arrive in one
# A claim call as the slow log shows it: FCALL of the library's function, or EVALSHA of the
# script where Functions are unavailable.
CLAIM_CALLS = (
    (b"FCALL", function_name("claim").encode()),
    (b"EVALSHA", hashlib.sha1(source("claim").encode()).hexdigest().encode()),
)


@dataclass(frozen=True)
class Replay:
    """What one run produced."""

    records: list[JobRecord]
    started_s: float  # epoch seconds of trace second 0 (compressed), replayed or not
    claim_usec: list[float]  # Redis's own time of each claim call it logged
    held: dict[int, Held]  # per row a policy held back: how long (its 'claimed' event)


@dataclass(frozen=True)
class Held:
    """How long the policies held a job back, from its 'claimed' event (claim.lua): from its
    first pass-over as the strict-order best (held_since) to the claim, and to the last
    pass-over; Redis milliseconds. `by`: the policy that passed it over last."""

    by: str
    held_ms: int
    passed_over_ms: int


def job_request(job: TraceJob) -> JobRequest:
    return convert(
        {
            "id": job.job_id,
            "service_type": job.service,
            "customer_id": job.customer,
            "priority": job.priority,
            "payload": {
                "row": job.row,
                "model": job.model,
                "work_s": job.work_s,
                "memory_gb": job.memory_gb,
            },
            "requirements": {
                "models": [job.model],
                "hardware": {"gpu": {"memory_gb": job.memory_gb}},
            },
        },
        JobRequest,
    )


class SlowlogClaims:
    """Collects the duration of every claim call from the slow log as it fills. Each poll
    reads and empties it in one MULTI, so a read stays small and nothing is lost unless more
    than SLOWLOG_MAX_LEN commands arrive between two polls."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.usec: list[float] = []

    async def start(self) -> None:
        await self._redis.config_set("slowlog-max-len", SLOWLOG_MAX_LEN)
        await self._redis.config_set("slowlog-log-slower-than", 0)
        await self._redis.slowlog_reset()

    async def collect(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.slowlog_get(SLOWLOG_MAX_LEN)
            pipe.slowlog_reset()
            entries, _ = await pipe.execute()
        for entry in entries:
            command = entry["command"]
            parts = command.split(b" ", 2) if isinstance(command, bytes) else []
            if len(parts) >= 2 and (parts[0].upper(), parts[1]) in CLAIM_CALLS:
                self.usec.append(float(entry["duration"]))


async def _submit_all(broker: Broker, jobs: Sequence[TraceJob], factor: float, t0: float) -> None:
    """Submit each job at `t0` plus its arrival (trace seconds) divided by `factor`."""
    requests = [job_request(job) for job in jobs]
    i = 0
    while i < len(jobs):
        now = time.time() - t0
        due = jobs[i].arrival_s / factor
        if due > now:
            await asyncio.sleep(min(due - now, 1.0))
            continue
        j = i
        while j < len(jobs) and jobs[j].arrival_s / factor <= now + SUBMIT_TICK_S:
            j += 1
        await broker.submit_many(requests[i:j])
        i = j


EVENTS_PER_READ = 10_000


async def read_held(redis: Redis, events_key: str) -> dict[int, Held]:
    """Per row (job id `row-N`) that a bounded policy passed over, its 'claimed' event's
    held_ms and passed_over_ms (the stream is sized to keep a whole run: policies.py)."""
    held: dict[int, Held] = {}
    start = "-"
    while True:
        entries: list[Any] = await redis.xrange(events_key, start, "+", count=EVENTS_PER_READ) or []
        for _, fields in entries:
            if fields.get(b"type") != b"claimed":
                continue
            data = orjson.loads(fields[b"data"])
            if "held_ms" in data:
                row = int(as_text(fields[b"job"]).removeprefix("row-"))
                held[row] = Held(str(data["held_by"]), data["held_ms"], data["passed_over_ms"])
        if len(entries) < EVENTS_PER_READ:
            return held
        start = "(" + as_text(entries[-1][0])


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float, pause: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(pause)


async def replay(
    jobs: Sequence[TraceJob],
    fleet: Sequence[CardSpec],
    settings: BrokerSettings,
    *,
    factor: float,
    processes: int,
    prepare: Callable[[Broker], Awaitable[None]] | None = None,
) -> Replay:
    """Run the trace once against a fresh Redis. `prepare`, when given, is awaited with the
    Broker before the fleet starts (for policy state kept in Redis)."""
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    async with private_redis() as (url, redis):
        broker = Broker(redis, settings)
        if prepare is not None:
            await prepare(broker)
        slowlog = SlowlogClaims(redis)
        with tempfile.TemporaryDirectory(prefix="emp-bench-fleet-") as tmp:
            outs = [Path(tmp) / f"records-{n}.json" for n in range(processes)]
            procs = [
                spawn.Process(
                    target=worker_process,
                    args=(url, list(fleet[n::processes]), settings, factor, stop, outs[n]),
                )
                for n in range(processes)
            ]
            for proc in procs:
                proc.start()
            try:

                def check_alive() -> None:
                    if any(p.exitcode is not None for p in procs):
                        raise RuntimeError("a worker process died during the replay")

                async def registered() -> bool:
                    check_alive()
                    return int(await redis.zcard(broker.keys.workers)) >= len(fleet)

                await _until(registered, "the fleet registering", 60)
                await slowlog.start()
                # Trace second 0 in epoch seconds: the first job arrives right away.
                t0 = time.time() - (jobs[0].arrival_s / factor if jobs else 0.0)
                submit = asyncio.create_task(_submit_all(broker, jobs, factor, t0))
                completed_key = broker.keys.finished("completed")

                async def all_completed() -> bool:
                    check_alive()
                    await slowlog.collect()
                    return int(await redis.zcard(completed_key)) >= len(jobs)

                span = (jobs[-1].arrival_s - jobs[0].arrival_s if jobs else 0.0) / factor
                await _until(all_completed, "every job completing", span + 300, SLOWLOG_POLL_S)
                await submit
                await slowlog.collect()
            finally:
                stop.set()
                for proc in procs:
                    proc.join(timeout=30)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
            if any(p.exitcode != 0 for p in procs):
                raise RuntimeError(f"worker processes exited with {[p.exitcode for p in procs]}")
            records = [r for out in outs for r in read_records(out)]
        held = await read_held(redis, broker.keys.events)
    return Replay(records, t0, slowlog.usec, held)
