"""The chaos matrix, faults of the worker gateway: the hub a gateway worker talks through
dies. Each test's docstring says what it does ("Does:") and what it proves ("Asserts:") for
RELIABILITY.md (see scripts/reliability.py)."""

from __future__ import annotations

import time

import httpx
import pytest

from shared.text import as_text
from tests.chaos.clients import sim_job, submit_batch, wait_all_finished
from tests.chaos.support import CLIENT, LEASE_TIMEOUT, OPERATOR, Chaos, read_events, stream_order
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


async def issue_token(hub_url: str, worker_id: str) -> str:
    grant = {"worker_id": worker_id, "services": ["simulation"], "max_concurrency": 4}
    async with httpx.AsyncClient(base_url=hub_url, headers=OPERATOR, timeout=10) as http:
        response = await http.post("/gateway/grants", json=grant)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


async def test_gateway_hub_failover(chaos: Chaos) -> None:
    """Does: two hubs share one Redis; 2 gateway workers (no Redis credentials, 4 slots each)
    list hub A first, then hub B. 16 jobs of 3 s (longer than the 2 s lease) and 48 short
    ones are submitted through B. Once 6 jobs run, hub A, which every gateway connection
    goes through, is killed with `kill -9`.

    Asserts: the workers reconnect to B and keep their leases by heartbeating through it:
    both workers heartbeat through B within 5 leases of the kill (measured: well inside one),
    no job is re-queued for a lost lease (no `retrying` event at all), the jobs running at
    the kill complete on the worker that held them, every job completes exactly once, and
    claims go on through B."""
    hub_a = await chaos.start_hub("hub-a")
    hub_b = await chaos.start_hub("hub-b")
    workers = ["gw-1", "gw-2"]
    for worker_id in workers:
        token = await issue_token(hub_b.url, worker_id)
        chaos.fleet.gateway_worker(worker_id, [hub_a.url, hub_b.url], token, CONCURRENT_JOBS="4")
    await chaos.registered(*workers)
    long_jobs = [sim_job(f"gw-long-{i:02d}", steps=30, step_ms=100) for i in range(16)]
    short_jobs = [sim_job(f"gw-short-{i:02d}", steps=2, step_ms=20) for i in range(48)]
    async with httpx.AsyncClient(base_url=hub_b.url, headers=CLIENT, timeout=10) as http:
        ids = await submit_batch(http, [*long_jobs, *short_jobs])

    async def six_running() -> bool:
        return int(await chaos.redis.zcard(chaos.keys.active)) >= 6

    await wait_until(six_running, timeout=30, message="6 jobs run")
    held_at_kill: dict[str, str] = {}
    for job in long_jobs:
        status, worker = await chaos.redis.hmget(chaos.keys.job(job["id"]), ["status", "worker_id"])
        if status == b"active" and worker is not None:
            held_at_kill[job["id"]] = as_text(worker)
    killed = chaos.fleet.by_name("hub-a")[-1].kill()

    async def beat_through_b() -> bool:
        beats = [await chaos.redis.hget(chaos.keys.worker(w), "last_heartbeat") for w in workers]
        return all(beat is not None and int(beat) / 1000 > killed for beat in beats)

    await wait_until(beat_through_b, timeout=LEASE_TIMEOUT * 5, interval=0.02)
    heartbeats_resumed = time.time() - killed
    await wait_all_finished(chaos, ids, timeout=90)

    events = await read_events(chaos.redis, chaos.keys)
    claims_after = [e for _, e in stream_order(events, "claimed") if e.ts_ms / 1000 > killed]
    first_claim_after = min((e.ts_ms / 1000 for e in claims_after), default=float("nan"))
    retried = [job_id for job_id, evs in events.items() if any(e.type == "retrying" for e in evs)]
    finished_by = {
        job_id: next(e.worker_id for e in events[job_id] if e.type == "completed")
        for job_id in held_at_kill
    }
    acc = await chaos.account(ids, events=events)
    chaos.report(
        acc,
        running_at_kill=len(held_at_kill),
        heartbeats_through_b_after_s=heartbeats_resumed,
        first_claim_after_kill_s=first_claim_after - killed,
        claims_after_kill=len(claims_after),
        requeued_for_lost_lease=len(retried),
        lease_s=LEASE_TIMEOUT,
    )
    acc.check()
    assert acc.completed == len(ids)
    assert retried == [], f"leases lost through the failover: {retried[:5]}"
    assert held_at_kill, "no long job was running at the kill"
    assert finished_by == held_at_kill
    assert claims_after, "no claim went through hub B after the kill"
