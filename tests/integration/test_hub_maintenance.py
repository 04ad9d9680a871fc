"""The maintenance loop: dead workers, timeouts, aging; idempotent with several hubs."""

from __future__ import annotations

import asyncio
import dataclasses

from redis.asyncio import Redis

from hub.maintenance import Maintenance
from hub.priority import PriorityPolicy
from shared.broker import Broker
from shared.job import JobRequest, JobStatus
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import OPERATOR, claim, hub_client, hub_settings, start_worker

SHORT_LEASE = BrokerSettings(
    lease_timeout=0.3,
    heartbeat_interval=0.1,
    reaper_interval=0.05,
    retry_backoff_base=0.0,
    retry_backoff_cap=0.0,
)


def maintenance(broker: Broker, policy: PriorityPolicy | None = None) -> Maintenance:
    priority = PriorityPolicy() if policy is None else policy
    settings = hub_settings("redis://unused", broker.settings, priority=priority)
    return Maintenance(broker, settings)


async def test_dead_workers_jobs_are_recovered_once_across_hubs(redis: Redis) -> None:
    broker = Broker(redis, SHORT_LEASE)
    job_id = (await broker.submit(JobRequest(service_type="comfyui"))).job_id
    caps = await start_worker(broker, "w1")
    await claim(broker, "w1", caps)
    hubs = [maintenance(broker), maintenance(broker)]
    recovered = 0

    async def recovered_by_both() -> bool:
        nonlocal recovered
        reports = await asyncio.gather(*(h.tick() for h in hubs))
        recovered += sum(int(r["reaped"]["recovered"]) for r in reports)
        return recovered > 0

    await wait_until(recovered_by_both, message="lease of the dead worker reclaimed")
    for h in hubs:
        await h.tick()
    job = await broker.get(job_id)
    assert job is not None
    assert (job.status, job.attempts, recovered) == (JobStatus.PENDING, 1, 1)


async def test_overlong_jobs_time_out(broker: Broker) -> None:
    job_id = (
        await broker.submit(JobRequest(service_type="comfyui", timeout_seconds=0.1, max_retries=0))
    ).job_id
    caps = await start_worker(broker, "w1")
    await claim(broker, "w1", caps)
    hub = maintenance(broker)

    async def timed_out() -> int:
        return int((await hub.tick())["reaped"]["timed_out"])

    await wait_until(timed_out, message="job timed out")
    job = await broker.get(job_id)
    assert job is not None
    assert job.status == JobStatus.FAILED
    assert job.error is not None
    assert "timed out" in job.error


async def test_aging_and_deadline_urgency_rescore_waiting_jobs(
    broker: Broker, redis: Redis
) -> None:
    old = (await broker.submit(JobRequest(service_type="s", priority=10))).job_id
    fresh = (await broker.submit(JobRequest(service_type="s", priority=30))).job_id
    (seconds, _) = await redis.time()
    await redis.hset(f"job:{old}", "created_at", (int(seconds) - 30 * 60) * 1000)
    urgent = (await broker.submit(JobRequest(service_type="s", priority=5))).job_id
    await redis.hset(f"job:{urgent}", "deadline", (int(seconds) + 1800) * 1000)
    hub = maintenance(
        broker,
        PriorityPolicy(aging_points_per_minute=1.0, aging_max_points=100, urgency_max_points=100),
    )
    changed = await hub.age()
    assert changed == 2
    jobs = {j.id: j for j in await broker.get_many([old, fresh, urgent])}
    assert jobs[old].effective_priority == 40
    assert jobs[fresh].effective_priority == 30
    # 5 + urgency 50 at 1800 s of a 3600 s window left. The value depends on the clock, but
    # only moves to 56 once 36 s have passed since the deadline was set, thousands of times
    # what this test takes even on a loaded 2-core box.
    assert 54 <= jobs[urgent].effective_priority <= 55
    assert await broker.queue_position(urgent) == 0
    assert await broker.queue_position(old) == 1
    assert await hub.age() == 0  # idempotent: nothing changes on a second pass


async def test_aging_visits_the_queue_in_bounded_batches(broker: Broker, redis: Redis) -> None:
    ids = [(await broker.submit(JobRequest(service_type="s", priority=0))).job_id for _ in range(7)]
    (seconds, _) = await redis.time()
    for job_id in ids:
        await redis.hset(f"job:{job_id}", "created_at", (int(seconds) - 600) * 1000)
    hub = maintenance(broker, PriorityPolicy(aging_points_per_minute=1.0, aging_max_points=100))
    hub.settings = dataclasses.replace(hub.settings, aging_batch=3)
    assert [await hub.age() for _ in range(3)] == [3, 3, 1]
    assert {j.effective_priority for j in await broker.get_many(ids)} == {10}


async def test_the_app_runs_maintenance_by_itself(redis_url: str, redis: Redis) -> None:
    settings = hub_settings(redis_url, SHORT_LEASE, maintenance=True)
    broker = Broker(redis, SHORT_LEASE)
    async with hub_client(settings) as api:
        job_id = (
            await api.post("/jobs", json={"service_type": "comfyui"}, headers=OPERATOR)
        ).json()["id"]
        caps = await start_worker(broker, "w1")
        await claim(broker, "w1", caps)

        async def back_in_queue() -> bool:
            job = (await api.get(f"/jobs/{job_id}", headers=OPERATOR)).json()
            return bool(job["status"] == "pending" and job["attempts"] == 1)

        await wait_until(back_in_queue, message="the hub's loop recovered the job")
