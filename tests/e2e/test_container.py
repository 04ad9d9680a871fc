"""The hub image as operators run it: built from the Containerfile, started with Podman,
serving a job submitted over REST to a worker on the host, and stopped with SIGTERM (what
`docker stop` sends) without losing a job, against an outside Redis and against its embedded
one, whose AOF lives in the /data volume.

Deselect with `-m "not container"`. tests/container_support.py makes the base image and holds
the flags these machines need; the first run on a machine debootstraps it (about a minute),
later runs reuse it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.embedded_redis import free_port
from shared.job import JobStatus
from tests.container_support import (
    RUN_FLAGS,
    build_hub_image,
    ensure_base_image,
    podman,
    remove_image,
    require_podman,
)
from tests.helpers import wait_until
from tests.hub_support import CLIENT, CLIENT_TOKEN, OPERATOR_TOKEN
from tests.process_support import registered, worker_process

pytestmark = [pytest.mark.e2e, pytest.mark.container, pytest.mark.timeout(600)]

SIMULATION = {"service_type": "simulation", "payload": {"steps": 2, "step_ms": 10, "result": "ok"}}
STOP_GRACE = 30  # seconds before `podman stop` would resort to SIGKILL (exit code 137)


@pytest.fixture(scope="module")
def hub_image() -> Iterator[str]:
    require_podman()
    image = build_hub_image(ensure_base_image())
    yield image
    remove_image(image)


class HubContainer:
    """One running container of the hub image, on the host's network."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> int:
        """`podman stop`: SIGTERM, then SIGKILL after STOP_GRACE; the container's exit code."""
        podman("stop", "--time", str(STOP_GRACE), self.name, timeout=STOP_GRACE + 30)
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr


@contextmanager
def hub_container(image: str, *args: str, **env: str) -> Iterator[HubContainer]:
    """Run the image with tokens and free ports, plus `env`; removed afterwards, whatever
    happened."""
    port = free_port()
    settings = {
        "HUB_PORT": str(port),
        "WS_PORT": str(free_port()),
        "HUB_AUTH_TOKEN": CLIENT_TOKEN,
        "HUB_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "HUB_ACCESS_LOG": "false",
        **env,
    }
    name = f"emp-test-hub-{uuid.uuid4().hex[:8]}"
    environment = [arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")]
    podman("run", "--detach", "--name", name, "--network", "host", *RUN_FLAGS, *environment,
           *args, image)  # fmt: skip
    try:
        yield HubContainer(name, port)
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


@asynccontextmanager
async def client_of(container: HubContainer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=container.url, headers=CLIENT, timeout=30) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=60, interval=0.2, message=f"{container.name} is ready")
        yield http


async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    created = await http.post("/jobs", json=body)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


async def test_the_image_serves_a_job_and_stops_on_sigterm_without_losing_one(
    hub_image: str, redis: Redis, broker: Broker, redis_url: str
) -> None:
    with hub_container(hub_image, HUB_REDIS_URL=redis_url) as hub:
        async with client_of(hub) as http:
            assert podman("healthcheck", "run", hub.name, check=False).returncode == 0
            assert podman("exec", hub.name, "id", "-un").stdout.strip() == "emp"
            with worker_process(redis_url, "ctr-w1"):
                await registered(redis, broker, "ctr-w1")
                served = await submit(http, SIMULATION)
                done = await http.get(f"/jobs/{served}?wait=20")
            waiting = await submit(http, SIMULATION)
        assert hub.stop() == 0, hub.logs()

    finished = await broker.get(served)
    assert finished is not None
    assert done.json()["status"] == finished.status == JobStatus.COMPLETED
    assert finished.result == {"steps": 2, "result": "ok", "worker_service": "simulation"}
    queued = await broker.get(waiting)
    assert queued is not None
    assert queued.status == JobStatus.PENDING
    with worker_process(redis_url, "ctr-w2"):

        async def completed() -> bool:
            job = await broker.get(waiting)
            return job is not None and job.status == JobStatus.COMPLETED

        await wait_until(completed, timeout=30, interval=0.1, message="the queued job completes")


async def test_the_embedded_redis_keeps_jobs_in_the_data_volume_across_a_restart(
    hub_image: str,
) -> None:
    volume = f"emp-test-data-{uuid.uuid4().hex[:8]}"
    mount = ("--volume", f"{volume}:/data")
    try:
        with hub_container(hub_image, *mount) as first:
            async with client_of(first) as http:
                kept = await submit(http, SIMULATION)
            assert first.stop() == 0, first.logs()
            assert "embedded valkey-server" in first.logs()
        with hub_container(hub_image, *mount) as second:
            async with client_of(second) as http:
                again = await http.get(f"/jobs/{kept}")
            assert second.stop() == 0, second.logs()
    finally:
        podman("volume", "rm", "--force", volume, check=False)
    assert again.status_code == 200
    assert again.json()["status"] == "pending"
