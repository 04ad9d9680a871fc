"""The chaos matrix (issue 6), load: a storm of jobs with mixed priorities, services and
requirements onto workers of different capabilities, with and without a storm of cancels.
Each test's docstring says what it does ("Does:") and what it proves ("Asserts:") for
RELIABILITY.md (see scripts/reliability.py)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import msgspec
import orjson
import pytest

from shared.capabilities import Capabilities
from shared.matching import Demand, matches
from shared.requirements import Requirements
from shared.text import as_text
from tests.chaos.clients import submit_batch, wait_all_finished
from tests.chaos.support import CLIENT, Chaos, read_events, stream_order
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# -- 6 -----------------------------------------------------------------------------------

STORM_JOBS = int(os.environ.get("EMP_CHAOS_STORM_JOBS", "10000"))
STORM_CLIENTS = 20
STORM_BATCH = 50
# Ten workers with different capabilities: two services (the simulation connector serves
# "render" under SIMULATION_SERVICE_NAME), GPUs of 0/24/48/80 GB, models, regions.
STORM_WORKERS: dict[str, dict[str, str]] = {
    "sim-24-us": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "24", "MODELS": "sdxl", "REGION": "us-east"},
    "sim-48-eu": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "48", "MODELS": "sdxl", "REGION": "eu-west"},
    "sim-80-eu": {
        "GPU_COUNT": "2",
        "GPU_MEMORY_GB": "80",
        "MODELS": "sdxl,flux",
        "REGION": "eu-west",
    },
    "sim-cpu-us": {"GPU_COUNT": "0", "REGION": "us-east"},
    "sim-24-eu": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "24", "REGION": "eu-west"},
    "ren-24-us": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "24", "MODELS": "sdxl", "REGION": "us-east"},
    "ren-80-eu": {
        "GPU_COUNT": "1",
        "GPU_MEMORY_GB": "80",
        "MODELS": "sdxl,flux",
        "REGION": "eu-west",
    },
    "ren-48-eu": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "48", "REGION": "eu-west"},
    "ren-cpu-us": {"GPU_COUNT": "0", "REGION": "us-east"},
    "ren-80-us": {"GPU_COUNT": "1", "GPU_MEMORY_GB": "80", "MODELS": "flux", "REGION": "us-east"},
}
# Every (service, requirements) pair below is served by at least one worker above.
STORM_REQUIREMENTS: list[dict[str, Any]] = [
    {},
    {"hardware": {"gpu": {"memory_gb": 24}}},
    {"hardware": {"gpu": {"memory_gb": 48}}},
    {"models": ["sdxl"]},
    {"geographic": {"region": "eu-west"}},
    {"hardware": {"gpu": {"memory_gb": 80}}, "models": ["flux"]},
]
STORM_PRIORITIES = (0, 25, 50, 75, 100)


def storm_jobs(prefix: str, count: int, rng: random.Random, **payload: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i:05d}",
            "service_type": rng.choice(("simulation", "render")),
            "priority": rng.choice(STORM_PRIORITIES),
            "requirements": rng.choice(STORM_REQUIREMENTS),
            "payload": {"steps": 1, "step_ms": 0, "result": f"{prefix}-{i:05d}", **payload},
        }
        for i in range(count)
    ]


async def start_storm_fleet(chaos: Chaos, slots: int) -> dict[str, Capabilities]:
    """Start the ten storm workers; returns the capabilities each registered."""
    for worker_id, env in STORM_WORKERS.items():
        service = {"SIMULATION_SERVICE_NAME": "render"} if worker_id.startswith("ren") else {}
        chaos.start_worker(worker_id, CONCURRENT_JOBS=str(slots), **service, **env)
    await chaos.registered(*STORM_WORKERS, timeout=60)
    caps: dict[str, Capabilities] = {}
    for worker_id in STORM_WORKERS:
        raw = await chaos.redis.hget(chaos.keys.worker(worker_id), "capabilities")
        assert raw is not None, f"{worker_id} registered without capabilities"
        caps[worker_id] = msgspec.json.decode(raw, type=Capabilities)
    return caps


async def storm_submit(
    url: str, jobs: list[dict[str, Any]], clients: int, on_batch: Any = None
) -> list[str]:
    """`clients` concurrent HTTP clients, each POSTing its share in batches."""
    shares = [jobs[n::clients] for n in range(clients)]
    acked: list[str] = []

    async def client(share: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient(base_url=url, headers=CLIENT, timeout=60) as http:
            for start in range(0, len(share), STORM_BATCH):
                ids = await submit_batch(http, share[start : start + STORM_BATCH])
                acked.extend(ids)
                if on_batch is not None:
                    await on_batch(ids)

    await asyncio.gather(*(client(share) for share in shares))
    return acked


@pytest.mark.timeout(240)
async def test_storm(chaos: Chaos) -> None:
    """Does: 10,000 jobs (EMP_CHAOS_STORM_JOBS) with random priorities, two services and
    six requirement classes arrive from 20 concurrent clients (POST /jobs/batch, 50 per
    batch) onto 10 workers with different GPUs, models, regions and services (4 slots
    each), simulation step_ms=0.

    Asserts: every job finishes exactly once (one claim, one `completed` event); every job
    was claimed and completed by a worker whose registered capabilities match it
    (shared.matching); within each (priority, service, requirement class), claims happen in
    submission order (`claimed` events vs `accepted` events in the stream)."""
    hub = await chaos.start_hub()
    caps = await start_storm_fleet(chaos, slots=4)
    jobs = storm_jobs("storm", STORM_JOBS, random.Random(6))
    began = time.monotonic()
    ids = await storm_submit(hub.url, jobs, STORM_CLIENTS)
    submitted_s = time.monotonic() - began
    assert sorted(ids) == sorted(j["id"] for j in jobs)
    await wait_all_finished(chaos, ids, timeout=180)
    drained_s = time.monotonic() - began
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)

    by_id = {j["id"]: j for j in jobs}
    mismatched: list[tuple[str, str | None]] = []
    reclaimed: list[str] = []
    for job_id, job in by_id.items():
        demand = Demand(
            job["service_type"], "", msgspec.convert(job["requirements"], type=Requirements)
        )
        runs = [e for e in events[job_id] if e.type in ("claimed", "completed")]
        if sum(e.type == "claimed" for e in runs) != 1:
            reclaimed.append(job_id)
        for event in runs:
            if event.worker_id not in caps or not matches(demand, caps[event.worker_id]):
                mismatched.append((job_id, event.worker_id))

    def group(job_id: str) -> tuple[Any, ...]:
        job = by_id[job_id]
        return job["priority"], job["service_type"], orjson.dumps(job["requirements"])

    accepted: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    claimed: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for job_id, _ in stream_order(events, "accepted"):
        accepted[group(job_id)].append(job_id)
    for job_id, _ in stream_order(events, "claimed"):
        claimed[group(job_id)].append(job_id)
    out_of_order = [g for g in accepted if accepted[g] != claimed[g]]

    chaos.report(
        acc,
        jobs=len(ids),
        submit_s=submitted_s,
        submit_to_drained_s=drained_s,
        jobs_per_s=len(ids) / drained_s,
        groups=len(accepted),
    )
    acc.check()
    assert acc.completed == len(ids)
    assert not reclaimed, f"claimed more than once: {reclaimed[:5]}"
    assert not mismatched, f"ran on a worker that does not match: {mismatched[:5]}"
    assert not out_of_order, f"claims out of submission order in {len(out_of_order)} group(s)"


# -- 7 -----------------------------------------------------------------------------------

CANCEL_JOBS = int(os.environ.get("EMP_CHAOS_CANCEL_JOBS", "2000"))
# A cancel this close to the nominal end of a run may reach the worker after its last step:
# then nothing is left to interrupt, and its completion is refused instead.
LAST_MOMENT_MS = 100
LOG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?"
    r"(?:interrupting job (?P<revoked>\S+): revoked"
    r"|job (?P<status>\w+) after (?P<secs>[\d.]+) s \[job_id=(?P<job>[^\] ]+))"
)


@dataclass
class RunLog:
    """What a worker's log says about its run of one job."""

    revoked_at: float | None = None  # epoch s when the broker's revocation reached it
    ended_at: float | None = None
    status: str | None = None  # completed | cancelled | stale | failed | ...
    seconds: float | None = None


def run_logs(log: str) -> dict[str, RunLog]:
    out: dict[str, RunLog] = defaultdict(RunLog)
    for line in log.splitlines():
        m = LOG_LINE.match(line)
        if m is None:
            continue
        when = datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m["revoked"]:
            out[m["revoked"]].revoked_at = when
        else:
            run = out[m["job"]]
            run.ended_at, run.status, run.seconds = when, m["status"], float(m["secs"])
    return out


@pytest.mark.timeout(240)
async def test_cancel_storm(chaos: Chaos) -> None:
    """Does: a storm of 2,000 jobs (EMP_CHAOS_CANCEL_JOBS) of 30-300 ms, random priorities,
    services and requirements, from 20 clients onto the 10 storm workers; meanwhile a
    canceller cancels a random 30% of them over REST at moments spread across the run
    (paced by finished jobs), each round aiming partly at jobs running right then.

    Asserts: each cancelled job ends `cancelled` (cancel answered 200) or `completed`
    (409: it finished first), never both (one terminal event); every other job completes;
    every job cancelled while active was interrupted on its worker: its run stopped short
    of its nominal length, told by the control message or by a refused progress report
    (only a cancel within 100 ms of the nominal end may find the work done, and then the
    completion is refused); no lease is left behind; the cancel-to-stopped latency is
    printed; lost = 0, completed_twice = 0."""
    hub = await chaos.start_hub()
    await start_storm_fleet(chaos, slots=4)
    rng = random.Random(7)
    jobs = storm_jobs("cs", CANCEL_JOBS, rng, step_ms=30)
    for job in jobs:
        job["payload"]["steps"] = rng.randint(1, 10)
    targets = rng.sample([j["id"] for j in jobs], k=len(jobs) * 3 // 10)
    answers: dict[str, tuple[int, str | None]] = {}  # job id -> (HTTP status, "was")
    submitted: list[str] = []

    async def finished_count() -> int:
        async with chaos.redis.pipeline(transaction=False) as pipe:
            for status in ("completed", "cancelled"):
                pipe.zcard(chaos.keys.finished(status))
            return sum(await pipe.execute())

    async def cancel(http: httpx.AsyncClient, job_id: str) -> None:
        response = await http.post(f"/jobs/{job_id}/cancel", json={"reason": "chaos"})
        assert response.status_code in (200, 409), response.text
        answers[job_id] = (response.status_code, response.json().get("was"))

    async def canceller() -> None:
        remaining = list(targets)
        per_round = max(1, len(targets) // 40)
        seen = 0
        async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
            while remaining:

                async def progressed(since: int = seen) -> int:
                    # Near the end fewer than a round's worth of jobs may be left to finish.
                    count = await finished_count()
                    return count if count >= min(since + len(jobs) // 60, len(jobs)) else 0

                seen = await wait_until(progressed, timeout=60, interval=0.02)
                active = {as_text(k) for k in await chaos.redis.zrange(chaos.keys.active, 0, -1)}
                known = set(submitted)  # only accepted jobs can be cancelled
                running = [j for j in remaining if j in active][:3]
                rest = [j for j in remaining if j not in running and j in known]
                batch = running + rest[:per_round]
                if len(submitted) == len(jobs) and seen + len(remaining) >= len(jobs):
                    batch = remaining  # the run is ending: cancel what is left
                remaining = [j for j in remaining if j not in set(batch)]
                await asyncio.gather(*(cancel(http, j) for j in batch))

    cancelling = asyncio.create_task(canceller())

    async def note(ids: list[str]) -> None:
        submitted.extend(ids)

    ids = await storm_submit(hub.url, jobs, STORM_CLIENTS, on_batch=note)
    await asyncio.wait_for(cancelling, 120)
    await wait_all_finished(chaos, ids, timeout=120)
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    final = {j.id: j.status for j in await chaos.broker.get_many(ids)}

    wrong: list[tuple[str, Any, str]] = []
    for job_id, (code, _) in answers.items():
        expected = "cancelled" if code == 200 else "completed"
        if final[job_id] != expected:
            wrong.append((job_id, code, final[job_id]))
    untouched = [j for j in ids if j not in answers and final[j] != "completed"]
    was_active = [j for j, (code, was) in answers.items() if code == 200 and was == "active"]
    runs: dict[str, RunLog] = {}
    for worker_id in STORM_WORKERS:
        runs.update(run_logs(chaos.fleet.by_name(worker_id)[-1].log()))
    steps = {j["id"]: j["payload"]["steps"] for j in jobs}
    latency: list[float] = []  # cancel -> the worker's run ended, for interrupted runs
    revoked = 0  # interrupted by the control message (else by a refused progress report)
    ran_out: list[str] = []  # the cancel arrived as the last step ended: nothing to stop
    not_interrupted: list[tuple[str, RunLog]] = []
    for job_id in was_active:
        cancelled = next(e for e in events[job_id] if e.type == "cancelled")
        claim = [e for e in events[job_id] if e.type == "claimed"][-1]
        nominal_ms = steps[job_id] * 30
        run = runs.get(job_id, RunLog())
        refused = run.status in ("cancelled", "stale")
        if (
            refused
            and run.ended_at is not None
            and (run.revoked_at is not None or (run.seconds or 0) * 1000 < nominal_ms)
        ):
            latency.append(run.ended_at - cancelled.ts_ms / 1000)
            revoked += run.revoked_at is not None
        elif refused and cancelled.ts_ms >= claim.ts_ms + nominal_ms - LAST_MOMENT_MS:
            ran_out.append(job_id)
        else:
            not_interrupted.append((job_id, run))
    left_leases = {
        w: n for w in STORM_WORKERS if (n := await chaos.redis.hlen(chaos.keys.leases(w)))
    }
    codes = Counter(
        "finished_first" if code == 409 else f"was_{was}" for code, was in answers.values()
    )
    chaos.report(
        acc,
        cancel_requests=len(answers),
        cancelled_pending=codes["was_pending"],
        cancelled_running=codes["was_active"],
        finished_first=codes["finished_first"],
        interrupted=len(latency),
        interrupted_by_control_message=revoked,
        cancelled_as_it_finished=len(ran_out),
        cancel_to_stopped_mean_s=statistics.fmean(latency) if latency else -1.0,
        cancel_to_stopped_max_s=max(latency, default=-1.0),
    )
    acc.check()
    assert len(answers) == len(targets)
    assert not wrong, f"cancel answer and final status disagree: {wrong[:5]}"
    assert not untouched, f"jobs nobody cancelled did not complete: {untouched[:5]}"
    assert acc.cancelled == codes["was_pending"] + codes["was_active"]
    assert codes["was_active"] > 0, "no cancel hit a running job"
    assert not not_interrupted, (
        f"running jobs cancelled but never interrupted: {not_interrupted[:5]}"
    )
    assert not left_leases, f"leases never released after the cancel: {left_leases}"
