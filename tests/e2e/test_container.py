"""The hub image as operators run it: built from the Containerfile, started with Podman,
serving a job submitted over REST to a worker on the host, and stopped with SIGTERM (what
`docker stop` sends) without losing a job, against an outside Redis and against its embedded
one, whose AOF lives in the /data volume.

Deselect with `-m "not container"`. tests/container_support.py makes the base image and holds
the flags these machines need; the first run on a machine debootstraps it (about a minute),
later runs reuse it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.job import JobStatus
from tests.container_support import (
    CONTAINERS_CONF,
    ROOT,
    RUN_FLAGS,
    build_hub_image,
    ensure_base_image,
    ensure_redis_image,
    podman,
    remove_image,
    require_podman,
)
from tests.helpers import wait_until
from tests.hub_support import CLIENT, CLIENT_TOKEN, OPERATOR_TOKEN
from tests.ports import free_port
from tests.process_support import registered, worker_process

pytestmark = [pytest.mark.e2e, pytest.mark.container, pytest.mark.timeout(600)]

SIMULATION = {"service_type": "simulation", "payload": {"steps": 2, "step_ms": 10, "result": "ok"}}
# Runs for minutes unless cancelled.
LONG_SIMULATION = {"service_type": "simulation", "payload": {"steps": 600, "step_ms": 500}}
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
async def client_of(
    container: HubContainer, headers: dict[str, str] = CLIENT
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=container.url, headers=headers, timeout=30) as http:

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
            with worker_process(redis_url, "ctr-w1") as first_worker:
                await registered(redis, broker, "ctr-w1")
                served = await submit(http, SIMULATION)
                done = await http.get(f"/jobs/{served}?wait=20")
                # Stopped as an operator would (it deregisters): a worker killed instead
                # stays registered, idle, until its heartbeat lapses, and the next job would
                # be handed to it and come back only through the hub's reaper.
                first_worker.send_signal(signal.SIGTERM)
                assert first_worker.wait(timeout=30) == 0
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


class ComposeProject:
    """compose.yaml, unchanged, run by podman-compose in a scratch folder beside a generated
    .env.hub, on the test's hub image and Debian's Redis, with the hub on free host ports."""

    def __init__(self, folder: Path, hub_image: str, redis_image: str) -> None:
        self.name = f"emp-test-compose-{uuid.uuid4().hex[:8]}"
        self.folder = folder
        self.port = free_port()
        self.client_token = secrets.token_hex(24)
        shutil.copyfile(ROOT / "compose.yaml", folder / "compose.yaml")
        (folder / ".env.hub").write_text(
            f"HUB_REDIS_PASSWORD={secrets.token_hex(24)}\n"
            f"HUB_AUTH_TOKEN={self.client_token}\n"
            f"HUB_OPERATOR_TOKEN={secrets.token_hex(24)}\n"
            "HUB_ACCESS_LOG=false\n"
        )
        (folder / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(folder / "containers.conf"),
            "EMP_HUB_IMAGE": hub_image,
            "EMP_REDIS_IMAGE": redis_image,
            "HUB_PORTS": str(self.port),
            "WS_PORTS": str(free_port()),
        }
        # podman-compose 1.0.3 (Debian 12) has no --profile and starts every service anyway.
        help_text = self.compose("--help").stdout
        self.profile = ("--profile", "workers") if "--profile" in help_text else ()
        self.volumes: set[str] = set()

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman-compose", "--project-name", self.name, *args], cwd=self.folder,
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"podman-compose {args[0]} failed:\n{done.stdout[-3000:]}"
        return done

    def up(self) -> None:
        self.compose(*self.profile, "up", "--detach")
        # Besides redis-data, each hub image's container has an anonymous /data volume
        # (the image's VOLUME), which `down --volumes` leaves behind here; the fixture ends it.
        for name in self.containers():
            mounts = podman("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", name)
            self.volumes.update(mounts.stdout.split())

    def down(self) -> None:
        self.compose(*self.profile, "down", "--volumes", timeout=180)

    def containers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.name}"
        listed = podman("ps", "--all", "--filter", label, "--format", "{{.Names}}")
        return listed.stdout.split()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(logs.stdout + logs.stderr)[-2000:]}"
            for name in self.containers()
            for logs in [podman("logs", name, check=False)]
        )


@pytest.fixture
def compose_project(hub_image: str, tmp_path: Path) -> Iterator[ComposeProject]:
    if shutil.which("podman-compose") is None:
        pytest.skip("no podman-compose: install Debian's podman-compose (`dev.py test` does)")
    project = ComposeProject(tmp_path, hub_image, ensure_redis_image())
    # podman-compose joins every service to <project>_default; made here first to see that
    # its containers can resolve each other's names (the hub reaches Redis as `redis`).
    network = f"{project.name}_default"
    podman("network", "create", network)
    try:
        dns = podman("network", "inspect", "--format", "{{.DNSEnabled}}", network).stdout
        if dns.strip() != "true":
            pytest.skip(
                "podman's networks have no DNS here: install Debian's "
                "golang-github-containernetworking-plugin-dnsname (CNI) or aardvark-dns (netavark)"
            )
        yield project
    finally:
        for name in project.containers():
            podman("rm", "--force", "--time", "0", name, check=False)
        podman("network", "rm", "--force", network, check=False)
        for volume in {f"{project.name}_redis-data", *project.volumes}:
            podman("volume", "rm", "--force", volume, check=False)


async def test_compose_runs_redis_the_hub_and_two_workers_that_serve_jobs(
    compose_project: ComposeProject,
) -> None:
    project = compose_project
    project.up()
    headers = {"Authorization": f"Bearer {project.client_token}"}
    container = HubContainer(f"{project.name}_hub_1", project.port)
    try:
        async with client_of(container, headers) as http:
            # A worker runs one job at a time, so two long jobs active at once are one on
            # each worker; cancelled, they end without waiting out their steps.
            long_jobs = [await submit(http, LONG_SIMULATION) for _ in range(2)]

            async def both_active() -> bool:
                jobs = [(await http.get(f"/jobs/{job}")).json() for job in long_jobs]
                return all(job["status"] == JobStatus.ACTIVE for job in jobs)

            await wait_until(both_active, timeout=60, interval=0.2, message="both jobs run")
            runners = {(await http.get(f"/jobs/{job}")).json()["worker_id"] for job in long_jobs}
            for job in long_jobs:
                assert (await http.post(f"/jobs/{job}/cancel")).status_code == 200
            served = await submit(http, SIMULATION)
            done = (await http.get(f"/jobs/{served}?wait=30")).json()
    except BaseException:
        print(project.logs())
        raise
    project.down()

    assert runners == {"compose-sim-1", "compose-sim-2"}
    assert done["status"] == JobStatus.COMPLETED
    assert done["result"] == {"steps": 2, "result": "ok", "worker_service": "simulation"}
    assert project.containers() == []
