"""The worker as a real process: start, work, drain on SIGTERM, die under kill -9."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import orjson
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.job import JobStatus
from tests.factories import job
from tests.helpers import redis_command, stream_fields, wait_until
from tests.process_support import ROOT, output_of, process_env, registered, worker_process
from tests.worker_support import finished, sim, status_is

pytestmark = pytest.mark.e2e


async def runs(broker: Broker, job_id: str) -> None:
    """Wait until a worker runs `job_id`: it reported progress. Its status alone does not
    say so: a job handed to an idle worker is active from its submission on, before the
    worker has read it."""

    async def running() -> bool:
        held = await broker.get(job_id)
        return held is not None and held.status == JobStatus.ACTIVE and held.progress > 0

    await wait_until(running, timeout=20, message=f"a worker runs {job_id}")


async def sigterm_during_a_long_job(
    broker: Broker, redis: Redis, proc: subprocess.Popen[bytes]
) -> str:
    """Once worker p1 runs a 50 s job, send it SIGTERM; the job's id."""
    await registered(redis, broker, "p1")
    job_id = (await broker.submit(job("simulation", payload=sim(steps=1000, step_ms=50)))).job_id
    await runs(broker, job_id)
    proc.send_signal(signal.SIGTERM)
    return job_id


async def test_worker_process_completes_jobs(broker: Broker, redis: Redis, redis_url: str) -> None:
    with worker_process(redis_url, "p1") as proc:
        await registered(redis, broker, "p1")
        ids = [
            (await broker.submit(job("simulation", payload=sim(result=n)))).job_id for n in range(3)
        ]
        for job_id in ids:
            assert (await finished(broker, job_id)).status == JobStatus.COMPLETED
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        log = output_of(proc)
    assert "worker p1 registered" in log
    assert f"[job_id={ids[0]}]" in log  # job ids on the lines about a job


async def test_sigterm_lets_running_jobs_finish_within_the_grace(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    with worker_process(redis_url, "p1", WORKER_SHUTDOWN_GRACE_SECONDS="10") as proc:
        await registered(redis, broker, "p1")
        job_id = (await broker.submit(job("simulation", payload=sim(steps=10, step_ms=50)))).job_id
        await runs(broker, job_id)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    done = await broker.get(job_id)
    assert done is not None
    assert done.status == JobStatus.COMPLETED
    assert await redis.hget(broker.keys.worker("p1"), "status") == b"offline"


async def test_sigterm_past_the_grace_releases_without_penalty(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    with worker_process(redis_url, "p1", WORKER_SHUTDOWN_GRACE_SECONDS="0.2") as proc:
        job_id = await sigterm_during_a_long_job(broker, redis, proc)
        assert proc.wait(timeout=20) == 0
    back = await broker.get(job_id)
    assert back is not None
    assert (back.status, back.attempts) == (JobStatus.PENDING, 0)


async def test_second_signal_exits_at_once(broker: Broker, redis: Redis, redis_url: str) -> None:
    with worker_process(redis_url, "p1", WORKER_SHUTDOWN_GRACE_SECONDS="600") as proc:
        await sigterm_during_a_long_job(broker, redis, proc)
        await wait_until(lambda: _state(redis, broker), timeout=10, message="worker stopping")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) != 0


async def _state(redis: Redis, broker: Broker) -> bool:
    return await redis.hget(broker.keys.worker("p1"), "status") == b"stopping"


async def test_kill_9_mid_job_another_worker_completes_it_once(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    with worker_process(redis_url, "victim") as victim:
        await registered(redis, broker, "victim")
        job_id = (await broker.submit(job("simulation", payload=sim(steps=20, step_ms=50)))).job_id
        await status_is(broker, job_id, JobStatus.ACTIVE)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    with worker_process(redis_url, "survivor"):
        await registered(redis, broker, "survivor")

        async def recovered() -> bool:  # what the hub's maintenance loop does
            return any(j == job_id for _, j, _ in (await broker.reap()).recovered)

        await wait_until(recovered, timeout=10, interval=0.1)
        done = await finished(broker, job_id, timeout=20)
    assert (done.status, done.worker_id, done.attempts) == (JobStatus.COMPLETED, "survivor", 1)
    events = [
        e
        for e in await stream_fields(redis, broker.keys.events)
        if e.get(b"job") == job_id.encode()
    ]
    assert [e[b"type"] for e in events].count(b"completed") == 1


def test_detect_prints_capabilities_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker", "detect"],
        env=process_env(
            SERVICES="simulation,comfyui", GPU_COUNT="2", GPU_MEMORY_GB="24", GPU_MODEL="RTX 4090"
        ),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    report = orjson.loads(out.stdout)
    caps = report["capabilities"]
    assert caps["services"] == ["simulation", "comfyui"]
    assert [g["memory_gb"] for g in caps["hardware"]["gpus"]] == [24.0, 24.0]
    assert report["hardware"]["cpu_cores"] >= 1


def test_bad_setting_fails_at_startup_naming_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "worker"],
        env=process_env(HUB_REDIS_URL="redis://127.0.0.1:1/0", CONCURRENT_JOBS="many"),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert b"CONCURRENT_JOBS" in out.stderr


async def test_redis_refusing_the_worker_is_one_clear_line(redis: Redis, redis_url: str) -> None:
    # A Redis user whose ACL lacks the commands the scripts need: not worth retrying.
    await redis_command(
        redis, "ACL", "SETUSER", "emp-readonly", "on", ">pw-12345678", "~*", "+ping", "+get"
    )
    try:
        host_port = redis_url.split("//", 1)[1]
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "worker"],
            env=process_env(
                HUB_REDIS_URL=f"redis://emp-readonly:pw-12345678@{host_port}",
                SERVICES="simulation",
                WORKER_DASHBOARD_ENABLED="false",
            ),
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    finally:
        await redis_command(redis, "ACL", "DELUSER", "emp-readonly")
    assert out.returncode == 2
    assert b"HUB_REDIS_URL: Redis refused this worker" in out.stderr
    assert b"Traceback" not in out.stderr
