"""The chaos matrix (issue 6): real hub, worker and Redis processes under failure, each
scenario ending with an exact accounting of every accepted job.

Each test's docstring says what it does ("Does:") and what it proves ("Asserts:");
`python -m scripts.reliability` builds RELIABILITY.md from these docstrings and the
ACCOUNTING / MEASURED lines the tests print, and `--check` fails when the two drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
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
import websockets

from shared.capabilities import Capabilities
from shared.matching import Demand, matches
from shared.requirements import Requirements
from tests.chaos.support import (
    CLIENT,
    LEASE_TIMEOUT,
    OPERATOR_TOKEN,
    REAPER_INTERVAL,
    Chaos,
    hub_ready,
    read_events,
    stream_order,
    unfinished,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# Reclaim after a death: lease expiry + one reaper period (with its 20 % jitter) + the
# time to hand the job to a free slot and for a loaded 2-core box to schedule all that.
RECLAIM_MARGIN = 1.5


def sim_job(job_id: str, *, steps: int, step_ms: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "service_type": "simulation",
        "payload": {"steps": steps, "step_ms": step_ms, "result": job_id},
        **extra,
    }


async def submit_batch(http: httpx.AsyncClient, jobs: list[dict[str, Any]]) -> list[str]:
    """POST /jobs/batch in chunks of at most 1000; every job must be created."""
    ids: list[str] = []
    for start in range(0, len(jobs), 1000):
        response = await http.post("/jobs/batch", json={"jobs": jobs[start : start + 1000]})
        assert response.status_code == 201, response.text
        created = response.json()["jobs"]
        assert all(j["created"] for j in created), created
        ids += [j["id"] for j in created]
    return ids


async def wait_all_finished(chaos: Chaos, ids: list[str], timeout: float) -> None:
    async def done() -> bool:
        return not await unfinished(chaos.redis, chaos.keys, ids)

    try:
        await wait_until(done, timeout=timeout, interval=0.1, message="every job finishes")
    except AssertionError:
        left = await unfinished(chaos.redis, chaos.keys, ids)
        raise AssertionError(f"{len(left)} job(s) unfinished, e.g. {left[:5]}") from None


async def collect_ws(ws: Any, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            into.append(orjson.loads(message))


def completed_seen(messages: list[dict[str, Any]]) -> set[str]:
    """Job ids with a `completed` event among WebSocket messages."""
    return {
        m["event"]["job_id"]
        for m in messages
        if m.get("type") == "event" and m["event"]["event"] == "completed"
    }


async def leases(chaos: Chaos, worker_id: str) -> list[str]:
    return [k.decode() for k in await chaos.redis.hkeys(chaos.keys.leases(worker_id))]


# -- 1 -----------------------------------------------------------------------------------


async def test_kill9(chaos: Chaos) -> None:
    """Does: 4 workers (2 slots each) run 120 half-second jobs submitted over REST; three
    times, a worker holding jobs is killed with `kill -9` and a fresh one takes its place.

    Asserts: every job completes exactly once (one `completed` event) with its own result;
    no completion comes from a killed worker after its death; each job the dead worker held
    is claimed again within lease timeout + reaper interval + 1.5 s of the kill (printed)."""
    hub = await chaos.start_hub()
    workers = [f"w{i}" for i in range(1, 5)]
    for worker_id in workers:
        chaos.start_worker(worker_id, CONCURRENT_JOBS="2")
    await chaos.registered(*workers)
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        ids = await submit_batch(
            http, [sim_job(f"k9-{i:03d}", steps=5, step_ms=100) for i in range(120)]
        )

    kills: list[tuple[str, float, list[str]]] = []  # victim, killed at (s), jobs it held
    next_id = len(workers) + 1
    for round_ in range(3):
        victim = workers[round_]

        async def holds_job(worker_id: str = victim) -> bool:
            return bool(await leases(chaos, worker_id))

        await wait_until(holds_job, timeout=20, interval=0.02, message=f"{victim} holds a job")
        killed = chaos.fleet.by_name(victim)[-1].kill()
        # The dead hold their leases until reaped. Rarely a job ends between the check and
        # the kill and the victim dies holding nothing new: the kill still counts.
        held = await leases(chaos, victim)
        kills.append((victim, killed, held))
        replacement = f"w{next_id}"
        next_id += 1
        chaos.start_worker(replacement, CONCURRENT_JOBS="2")
        workers.append(replacement)

        async def reclaimed(jobs: list[str] = held, dead: str = victim, at: float = killed) -> bool:
            events = await read_events(chaos.redis, chaos.keys)
            return all(
                any(
                    e.type == "claimed" and e.worker_id != dead and e.ts_ms >= at * 1000
                    for e in events[j]
                )
                for j in jobs
            )

        await wait_until(reclaimed, timeout=15, interval=0.05, message=f"{victim}'s jobs reclaimed")

    await wait_all_finished(chaos, ids, timeout=60)
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)

    reclaim: list[float] = []
    requeue: list[float] = []
    death = {victim: killed for victim, killed, _ in kills}
    for victim, killed, held in kills:
        for job_id in held:
            after = [e for e in events[job_id] if e.ts_ms >= killed * 1000]
            claim = next(e for e in after if e.type == "claimed" and e.worker_id != victim)
            retry = next(e for e in after if e.type == "retrying")
            reclaim.append(claim.ts_ms / 1000 - killed)
            requeue.append(retry.ts_ms / 1000 - killed)
    zombies = [
        (job_id, e.worker_id)
        for job_id in ids
        for e in events[job_id]
        if e.type == "completed" and e.worker_id in death and e.ts_ms > death[e.worker_id] * 1000
    ]
    jobs = await chaos.broker.get_many(ids)
    wrong_result = [j.id for j in jobs if (j.result or {}).get("result") != j.id]
    chaos.report(
        acc,
        kills=len(kills),
        jobs_held_by_killed=len(reclaim),
        kill_to_requeue_max_s=max(requeue, default=-1.0),
        kill_to_reclaim_mean_s=statistics.fmean(reclaim) if reclaim else -1.0,
        kill_to_reclaim_max_s=max(reclaim, default=-1.0),
    )
    acc.check()
    assert acc.completed == len(ids)
    assert reclaim, "no kill caught a worker holding a job"
    assert not zombies, f"completed by a dead worker: {zombies}"
    assert not wrong_result, wrong_result
    bound = LEASE_TIMEOUT + REAPER_INTERVAL + RECLAIM_MARGIN
    assert max(reclaim) <= bound, f"kill-to-reclaim {max(reclaim):.2f} s > {bound:.2f} s"


# -- 2 -----------------------------------------------------------------------------------


def ended_rejected(proc_log: str, job_id: str) -> bool:
    """The worker's own account of a run whose report Redis refused (fencing): the job
    runner logs `job stale` (complete refused) or `job cancelled` (progress or release
    refused, then the run was interrupted)."""
    marker = f"job_id={job_id}"
    return any(
        marker in line and ("job stale after" in line or "job cancelled after" in line)
        for line in proc_log.splitlines()
    )


async def test_sigstop(chaos: Chaos) -> None:
    """Does: a worker is frozen with SIGSTOP while it runs jobs, and stays frozen until
    the other workers have re-run and completed those jobs (longer than its lease); then it
    gets SIGCONT. Afterwards the other workers stop and new jobs are submitted.

    Asserts: the frozen worker's jobs were claimed again and completed by another worker
    (final worker_id), with exactly one `completed` event and no event after it (its late
    progress and completion were refused: it logs them as stale/cancelled); it rejoins by
    itself and completes the new jobs; lost = 0, completed_twice = 0."""
    hub = await chaos.start_hub()
    frozen = chaos.start_worker("frozen", CONCURRENT_JOBS="2")
    chaos.start_worker("w1")
    chaos.start_worker("w2")
    await chaos.registered("frozen", "w1", "w2")
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        ids = await submit_batch(
            http, [sim_job(f"st-{i:03d}", steps=10, step_ms=100) for i in range(16)]
        )

        async def holds_two() -> bool:
            return len(await leases(chaos, "frozen")) == 2

        await wait_until(holds_two, timeout=20, interval=0.02, message="frozen holds 2 jobs")
        stopped = frozen.freeze()
        held = await leases(chaos, "frozen")
        assert held, "the frozen worker holds nothing"

        async def redone_elsewhere() -> bool:
            jobs = await chaos.broker.get_many(held)
            return all(j.status == "completed" and j.worker_id != "frozen" for j in jobs)

        await wait_until(redone_elsewhere, timeout=20, interval=0.05, message="jobs redone")
        thawed = frozen.thaw()

        async def refused() -> bool:
            log = frozen.log()
            return all(ended_rejected(log, j) for j in held)

        await wait_until(refused, timeout=15, interval=0.05, message="late reports refused")
        await chaos.registered("frozen")
        await wait_all_finished(chaos, ids, timeout=60)
        for name in ("w1", "w2"):
            assert chaos.fleet.by_name(name)[-1].terminate() == 0
        ids_after = await submit_batch(
            http, [sim_job(f"st-after-{i}", steps=2, step_ms=10) for i in range(3)]
        )
        await wait_all_finished(chaos, ids_after, timeout=30)

    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids + ids_after, events=events)
    chaos.report(acc, frozen_for_s=thawed - stopped, jobs_redone=len(held))
    acc.check()
    assert acc.completed == acc.submitted
    for job_id in held:
        types = [e.type for e in events[job_id]]
        assert types.count("completed") == 1, types
        assert types[-1] == "completed", f"event after the outcome: {types}"
        completed = next(e for e in events[job_id] if e.type == "completed")
        assert completed.worker_id in ("w1", "w2"), completed
    after = await chaos.broker.get_many(ids_after)
    assert {j.worker_id for j in after} == {"frozen"}


# -- 3 -----------------------------------------------------------------------------------


class Submitter:
    """Submits jobs one at a time (client-chosen ids) through any of several hubs, retrying
    each until a hub acknowledges it: 201 created, or 200 when an earlier attempt that got
    no answer had in fact been written. A transport error moves on to the next hub; a 503
    (Redis unreachable) retries after a short backoff."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [
            httpx.AsyncClient(base_url=url, headers=CLIENT, timeout=httpx.Timeout(10, connect=2))
            for url in urls
        ]
        self.acked: list[str] = []
        self.replayed: list[str] = []  # acknowledged by a 200 on retry
        self.served: Counter[int] = Counter()  # hub index -> acknowledgements
        self.acked_by: dict[str, int] = {}  # job id -> the hub that acknowledged it
        self.sent_at: dict[str, float] = {}  # job id -> when the acknowledged request left
        self.failures: Counter[str] = Counter()
        self.paused_hubs: set[int] = set()
        self.flowing = asyncio.Event()  # run() lanes start no new submission while clear
        self.flowing.set()

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def submit(self, job: dict[str, Any], hub: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            index = (hub + attempt) % len(self.clients)
            attempt += 1
            sent = time.time()
            try:
                response = await self.clients[index].post("/jobs", json=job)
            except httpx.TransportError as exc:
                self.failures[type(exc).__name__] += 1
                response = None
            if response is not None and response.status_code in (200, 201):
                assert response.json()["id"] == job["id"]
                self.acked.append(job["id"])
                if response.status_code == 200:
                    self.replayed.append(job["id"])
                self.served[index] += 1
                self.acked_by[job["id"]] = index
                self.sent_at[job["id"]] = sent
                return
            if response is not None:
                assert response.status_code == 503, response.text
                self.failures["503"] += 1
            assert time.monotonic() < deadline, f"{job['id']} never acknowledged"
            await asyncio.sleep(0.05)  # retry pacing while a hub or Redis is down

    async def run(
        self, jobs: list[dict[str, Any]], concurrency: int, hubs: int | None = None
    ) -> None:
        queue = list(reversed(jobs))
        count = hubs or len(self.clients)

        async def lane(n: int) -> None:
            i = n
            while queue:
                await self.flowing.wait()
                if not queue:
                    return
                await self.submit(queue.pop(), hub=i % count)
                i += 1

        await asyncio.gather(*(lane(n) for n in range(concurrency)))


async def test_redis_restart(chaos: Chaos) -> None:
    """Does: a hub and 3 workers run while 4 clients submit 300 short jobs one by one over
    REST and an operator WebSocket on the hub follows all events. Twice during the load
    Redis (AOF, appendfsync always) is killed with `kill -9` and started again on the same
    port and data directory: first as soon as the hub (503s) and every worker (failed
    heartbeats) have noticed, then after an outage longer than the lease, so every worker
    is presumed dead when Redis returns. Clients retry unacknowledged submissions with the
    same job id.

    Asserts: no acknowledged submission (201, or 200 for a retry that had been written) is
    lost; the hub and every worker reconnect by themselves (each worker claims jobs after
    the last restart; the WebSocket opened before the restarts delivers every job's
    `completed` event); the run finishes with every job completed exactly once (jobs
    running during the long outage run again; their outcome is recorded once)."""
    hub = await chaos.start_hub()
    workers = ["w1", "w2", "w3"]
    for worker_id in workers:
        chaos.start_worker(worker_id, CONCURRENT_JOBS="2")
    await chaos.registered(*workers)
    jobs = [sim_job(f"rr-{i:03d}", steps=2, step_ms=25) for i in range(300)]
    ids = [j["id"] for j in jobs]
    submitter = Submitter([hub.url])
    outages: list[float] = []
    acked_at_kill: list[int] = []

    def heartbeat_failures() -> list[int]:
        return [chaos.fleet.by_name(w)[-1].log().count("heartbeat failed") for w in workers]

    async def outage(after_acks: int, at_least: float) -> float:
        """Kill Redis once `after_acks` submissions were acknowledged; start it again when
        the hub and all workers have noticed and `at_least` seconds have passed."""
        await wait_until(lambda: len(submitter.acked) >= after_acks or load.done(), timeout=30)
        assert not load.done(), "the load finished before the restart"
        acked_at_kill.append(len(submitter.acked))
        failures, marks = submitter.failures["503"], heartbeat_failures()
        killed = chaos.server.kill()

        def noticed() -> bool:
            beats = heartbeat_failures()
            return (
                submitter.failures["503"] > failures
                and all(b > m for b, m in zip(beats, marks, strict=True))
                and time.time() - killed >= at_least  # the outage's length is the scenario
            )

        await wait_until(noticed, timeout=20, interval=0.02, message="outage noticed")
        chaos.server.start()
        outages.append(time.time() - killed)
        return time.time()

    received: list[dict[str, Any]] = []
    ws_url = hub.url.replace("http://", "ws://") + f"/ws?token={OPERATOR_TOKEN}"
    async with websockets.connect(ws_url, open_timeout=5) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        reader = asyncio.create_task(collect_ws(ws, received))
        try:
            load = asyncio.create_task(submitter.run(jobs, concurrency=4))
            await outage(after_acks=80, at_least=0.0)
            restarted = await outage(after_acks=160, at_least=LEASE_TIMEOUT + 1.0)
            await load
        finally:
            await submitter.close()
        assert sorted(submitter.acked) == sorted(ids)
        await wait_all_finished(chaos, ids, timeout=60)
        await wait_until(
            lambda: completed_seen(received) >= set(ids),
            timeout=20,
            message="the WebSocket delivers every outcome",
        )
        reader.cancel()
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    claimed_after = {
        e.worker_id for evs in events.values() for e in evs
        if e.type == "claimed" and e.ts_ms > restarted * 1000
    }  # fmt: skip
    rerun = sum(1 for evs in events.values() if sum(e.type == "claimed" for e in evs) > 1)
    chaos.report(
        acc,
        appendfsync=chaos.server.appendfsync,
        acked_at_kills="/".join(map(str, acked_at_kill)),
        redis_down_s="/".join(f"{o:.2f}" for o in outages),
        retried_submissions=sum(submitter.failures.values()),
        replayed_200=len(submitter.replayed),
        jobs_run_twice=rerun,
    )
    acc.check()
    assert acc.completed == len(ids)
    assert set(workers) <= claimed_after, f"only {claimed_after} claimed after the restart"


# -- 4 -----------------------------------------------------------------------------------


async def sse_events(base_url: str, job_id: str, timeout: float = 30) -> list[str]:
    """Follow GET /jobs/{id}/events until the stream ends; the event names received."""
    names: list[str] = []
    async with (
        httpx.AsyncClient(base_url=base_url, headers=CLIENT, timeout=timeout) as http,
        http.stream("GET", f"/jobs/{job_id}/events") as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
    return names


async def test_hub_failover(chaos: Chaos) -> None:
    """Does: two hubs share one Redis; 3 workers run; 4 clients submit 200 jobs round-robin
    over both hubs, falling over to the other hub on a connection error. An operator
    WebSocket (all events) and an SSE stream follow hub B. After 50 acknowledgements hub A
    is killed with `kill -9`; after 120, new submissions are held while it restarts on the
    same port.

    Asserts: while A is down, B keeps acknowledging submissions; B's WebSocket delivers a
    `completed` event for every job and B's SSE stream follows a job submitted to A before
    the kill to its `completed` event; the restarted A serves submissions, reads of jobs
    submitted to B, and SSE again; every job completes exactly once."""
    hub_a = await chaos.start_hub("hub-a")
    hub_b = await chaos.start_hub("hub-b")
    workers = ["w1", "w2", "w3"]
    for worker_id in workers:
        chaos.start_worker(worker_id, CONCURRENT_JOBS="2")
    await chaos.registered(*workers)
    ws_url = hub_b.url.replace("http://", "ws://") + f"/ws?token={OPERATOR_TOKEN}"
    received: list[dict[str, Any]] = []
    jobs = [sim_job(f"hf-{i:03d}", steps=2, step_ms=25) for i in range(200)]
    long_job = sim_job("hf-long", steps=30, step_ms=100)
    submitter = Submitter([hub_a.url, hub_b.url])
    async with websockets.connect(ws_url, open_timeout=5) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        reader = asyncio.create_task(collect_ws(ws, received))
        try:
            await submitter.submit(long_job, hub=0)
            follow = asyncio.create_task(sse_events(hub_b.url, "hf-long"))
            load = asyncio.create_task(submitter.run(jobs, concurrency=4, hubs=2))
            await wait_until(lambda: len(submitter.acked) >= 50 or load.done(), timeout=30)
            assert not load.done(), "the load finished before the kill"
            killed = chaos.fleet.by_name("hub-a")[-1].kill()
            at_kill = submitter.served.copy()
            await wait_until(lambda: len(submitter.acked) >= 120 or load.done(), timeout=30)
            served_by_b_alone = submitter.served[1] - at_kill[1]
            from_the_dead = [
                j for j, hub in submitter.acked_by.items()
                if hub == 0 and submitter.sent_at[j] > killed
            ]  # fmt: skip
            assert not from_the_dead, f"a dead hub acknowledged {from_the_dead}"
            # Hold the rest of the load while A restarts, so some of it is left for A.
            submitter.flowing.clear()
            assert not load.done(), "the load finished before the restart"
            rejoin_started = time.time()
            restarted = chaos.fleet.hub("hub-a", port=hub_a.port)
            await hub_ready(restarted)
            rejoined = time.time()
            at_restart = submitter.served.copy()
            submitter.flowing.set()
            await load
            assert submitter.served[0] > at_restart[0], "the restarted hub served nothing"
            extra = sim_job("hf-after", steps=2, step_ms=25)
            await submitter.submit(extra, hub=0)
            assert submitter.served[0] > at_restart[0] + 1
            sse_after = await asyncio.wait_for(sse_events(hub_a.url, "hf-after"), 30)
            sse_long = await asyncio.wait_for(follow, 30)
            ids = [j["id"] for j in (long_job, *jobs, extra)]
            await wait_all_finished(chaos, ids, timeout=60)

            await wait_until(
                lambda: completed_seen(received) >= set(ids),
                timeout=20,
                message="B's WebSocket delivers every outcome",
            )
        finally:
            await submitter.close()
        reader.cancel()
    async with httpx.AsyncClient(base_url=hub_a.url, headers=CLIENT, timeout=10) as http:
        via_b = [j for j, hub in submitter.acked_by.items() if hub == 1][-1]
        assert (await http.get(f"/jobs/{via_b}")).json()["status"] == "completed"
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    chaos.report(
        acc,
        acked_by_b_while_a_down=served_by_b_alone,
        acked_by_a_after_rejoin=submitter.served[0] - at_restart[0],
        hub_a_down_s=rejoin_started - killed,
        hub_a_restart_s=rejoined - rejoin_started,
        failovers=sum(submitter.failures.values()),
    )
    acc.check()
    assert acc.completed == len(ids)
    assert served_by_b_alone > 0
    assert sse_long[0] == "snapshot", sse_long
    assert sse_long[-1] == "completed", sse_long
    assert sse_after[-1] == "completed", sse_after


# -- 4b ----------------------------------------------------------------------------------

# A correct client notices a silently dead connection within its command socket timeout
# (10 s, shared/redis_client.py) plus a lease and an idle poll: this is generous.
SILENT_DROP_BOUND = 20.0


async def test_hub_blackhole(chaos: Chaos) -> None:
    """Does: a hub reaches Redis through the test's TCP proxy (one worker connects
    directly); once a job has been followed to completion over SSE, the proxy silently
    black-holes every open connection (no reset, no close: a NAT or firewall that forgot
    them) while new connections flow normally. A job is then submitted and followed over
    SSE on the same hub.

    Asserts: the hub notices and reconnects by itself: the new job's SSE stream reaches
    `completed` within 20 s of the drop, and every job completes exactly once."""
    proxy = await chaos.proxy()
    hub = await chaos.start_hub(REDIS_URL=proxy.url)
    chaos.start_worker("w1")
    await chaos.registered("w1")
    ids: list[str] = []
    names: list[str] = []
    first_request_s = -1.0
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=60) as http:
        ids += await submit_batch(http, [sim_job("hb-0", steps=5, step_ms=100)])
        before = await asyncio.wait_for(sse_events(hub.url, "hb-0"), 30)
        assert before[-1] == "completed", before
        dropped = proxy.blackhole()
        try:
            ids += await submit_batch(http, [sim_job("hb-1", steps=5, step_ms=100)])
            first_request_s = time.time() - dropped
            left = SILENT_DROP_BOUND - (time.time() - dropped)
            follow = asyncio.create_task(sse_events(hub.url, "hb-1", timeout=60))
            done, _ = await asyncio.wait({follow}, timeout=max(left, 1.0))
            if follow in done:
                names = follow.result()
            else:
                follow.cancel()
            ready = (await http.get("/ready")).json()
        finally:
            await wait_all_finished(chaos, ids, timeout=30)
            acc = await chaos.account(ids)
            chaos.report(acc, first_request_after_drop_s=first_request_s, sse_events=len(names))
    acc.check()
    assert names[-1:] == ["completed"], (
        f"no event reached SSE within {SILENT_DROP_BOUND:g} s of the drop (got {names}); "
        f"/ready says {ready}"
    )


# -- 5 -----------------------------------------------------------------------------------


async def test_partition(chaos: Chaos) -> None:
    """Does: one worker reaches Redis only through a TCP proxy in the test, two others
    directly. While the proxied worker runs jobs the proxy is paused (nothing forwarded,
    connections held open, no reset) until the other workers have re-run and completed its
    jobs, longer than its lease; then the proxy resumes and everything the worker sent
    meanwhile (heartbeats, progress, completions) reaches Redis late. Afterwards the other
    workers stop and new jobs are submitted.

    Asserts: the cut-off worker's jobs were recovered and completed by the others; its late
    reports are refused (one `completed` event per job, none after it, final worker_id is
    another worker); it reconnects by itself and completes the new jobs; lost = 0,
    completed_twice = 0."""
    hub = await chaos.start_hub()
    proxy = await chaos.proxy()
    cut = chaos.start_worker("cut", CONCURRENT_JOBS="2", HUB_REDIS_URL=proxy.url)
    chaos.start_worker("w1")
    chaos.start_worker("w2")
    await chaos.registered("cut", "w1", "w2")
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        ids = await submit_batch(
            http, [sim_job(f"pt-{i:03d}", steps=10, step_ms=100) for i in range(16)]
        )

        async def holds_two() -> bool:
            return len(await leases(chaos, "cut")) == 2

        await wait_until(holds_two, timeout=20, interval=0.02, message="cut holds 2 jobs")
        paused = proxy.pause()
        held = await leases(chaos, "cut")
        assert held, "the cut-off worker holds nothing"

        async def redone_elsewhere() -> bool:
            jobs = await chaos.broker.get_many(held)
            return all(j.status == "completed" and j.worker_id != "cut" for j in jobs)

        await wait_until(redone_elsewhere, timeout=20, interval=0.05, message="jobs redone")
        resumed = proxy.resume()

        async def refused() -> bool:
            log = cut.log()
            return all(ended_rejected(log, j) for j in held)

        await wait_until(refused, timeout=30, interval=0.05, message="late reports refused")
        await chaos.registered("cut")
        await wait_all_finished(chaos, ids, timeout=60)
        for name in ("w1", "w2"):
            assert chaos.fleet.by_name(name)[-1].terminate() == 0
        ids_after = await submit_batch(
            http, [sim_job(f"pt-after-{i}", steps=2, step_ms=10) for i in range(3)]
        )
        await wait_all_finished(chaos, ids_after, timeout=30)

    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids + ids_after, events=events)
    chaos.report(acc, partitioned_for_s=resumed - paused, jobs_recovered=len(held))
    acc.check()
    assert acc.completed == acc.submitted
    for job_id in held:
        types = [e.type for e in events[job_id]]
        assert types.count("completed") == 1, types
        assert types[-1] == "completed", f"event after the outcome: {types}"
        completed = next(e for e in events[job_id] if e.type == "completed")
        assert completed.worker_id in ("w1", "w2"), completed
    after = await chaos.broker.get_many(ids_after)
    assert {j.worker_id for j in after} == {"cut"}


# -- 5b ----------------------------------------------------------------------------------


async def test_partition_blackhole(chaos: Chaos) -> None:
    """Does: the only worker reaches Redis through the test's TCP proxy; after it ran a job
    and went idle, the proxy silently black-holes every open connection (no reset, no
    close) while new connections flow normally. Three jobs are then submitted.

    Asserts: the worker notices and reconnects by itself: the three jobs complete within
    20 s of the drop, exactly once."""
    hub = await chaos.start_hub()
    proxy = await chaos.proxy()
    chaos.start_worker("solo", HUB_REDIS_URL=proxy.url)
    await chaos.registered("solo")
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        ids = await submit_batch(http, [sim_job("pb-0", steps=2, step_ms=10)])
        await wait_all_finished(chaos, ids, timeout=20)
        dropped = proxy.blackhole()
        later = await submit_batch(
            http, [sim_job(f"pb-{i}", steps=2, step_ms=10) for i in range(1, 4)]
        )
    try:
        await wait_all_finished(chaos, later, timeout=SILENT_DROP_BOUND)
    finally:
        acc = await chaos.account(ids + later)
        heartbeat = await chaos.redis.hget(chaos.keys.worker("solo"), "last_heartbeat")
        heartbeat_age = time.time() - int(heartbeat or 0) / 1000
        chaos.report(acc, waited_s=time.time() - dropped, heartbeat_age_s=heartbeat_age)
    acc.check()


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
                    count = await finished_count()
                    return count if count >= since + len(jobs) // 60 else 0

                seen = await wait_until(progressed, timeout=60, interval=0.02)
                active = {k.decode() for k in await chaos.redis.zrange(chaos.keys.active, 0, -1)}
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
