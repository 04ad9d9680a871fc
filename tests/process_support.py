"""Starting real worker processes for end-to-end tests, and never leaving one behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis.asyncio import Redis

from shared.broker import Broker
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent

WORKER_ENV = {
    "SERVICES": "simulation",
    "WORKER_DASHBOARD_ENABLED": "false",
    "LEASE_TIMEOUT_SECONDS": "2",
    "HEARTBEAT_INTERVAL_SECONDS": "0.3",
    "RETRY_BACKOFF_SECONDS": "0.05",
    "RETRY_AVOID_SECONDS": "0",
    "IDLE_POLL_SECONDS": "1",
    "WORKER_PROGRESS_INTERVAL_SECONDS": "0.1",
    "LOG_LEVEL": "info",
}


def process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "WORKER_", "REDIS"))}
    env["PYTHONPATH"] = str(ROOT)
    env["WORKER_ENV_FILE"] = "/nonexistent/.env.worker"  # never pick up a developer's file
    env.update(extra)
    return env


@contextmanager
def worker_process(redis_url: str, worker_id: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker"],
        env=process_env(
            **{**WORKER_ENV, "HUB_REDIS_URL": redis_url, "WORKER_ID": worker_id, **env}
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def output_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    return proc.stdout.read().decode(errors="replace")


async def registered(redis: Redis, broker: Broker, worker_id: str) -> None:
    async def check() -> bool:
        return await redis.zscore(broker.keys.workers, worker_id) is not None

    await wait_until(check, timeout=20, message=f"worker {worker_id} registers")
