"""The container files, read as files. Containerfile: what the image promises operators
(version label, base argument, unprivileged PID 1, /data, ports, health, no baked settings).
compose.yaml: Redis with AOF, a volume and the password from .env.hub; the hub built from the
Containerfile; two simulation workers under the `workers` profile. The shell each service runs
is run here, with sh and stand-ins for redis-server, emp-hub and emp-worker that report what
they were given. (tests/e2e/test_container.py builds and runs the image itself, and runs the
compose stack with podman-compose.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import __version__

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolate(text: str) -> str:
    """What Compose does to a value with no variables set: `${NAME:-default}` -> default,
    `$$` -> `$`."""
    return VARIABLE.sub(lambda m: m[2], text).replace("$$", "$")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert "redis-data" in compose["volumes"]
    found: dict[str, Any] = compose["services"]
    return found


def stand_in(folder: Path, name: str) -> None:
    """An executable `name` that prints its arguments, stdin and HUB_REDIS_URL."""
    script = folder / name
    script.write_text(
        f'#!/bin/sh\necho "{name} $*"\necho "url=${{HUB_REDIS_URL}}"\n[ -t 0 ] || cat\n',
        encoding="utf-8",
    )
    script.chmod(0o755)


def run_service(
    service: dict[str, Any], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The service's command as its container would run it, stand-ins on PATH."""
    argv = [interpolate(part) for part in service.get("entrypoint") or service["command"]]
    for name in ("redis-server", "emp-hub", "emp-worker"):
        stand_in(tmp_path, name)
    environment = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **env}
    return subprocess.run(
        argv, env=environment, capture_output=True, text=True, timeout=10, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_redis_keeps_an_append_only_file_in_its_volume(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert "redis-data:/data" in redis["volumes"]
    script = " ".join(redis["command"])
    assert "--appendonly yes" in script
    assert "--dir /data" in script
    assert redis["env_file"] == ".env.hub"


def test_redis_takes_its_password_from_env_hub_on_stdin_not_argv(
    services: dict[str, Any], tmp_path: Path
) -> None:
    done = run_service(services["redis"], tmp_path, HUB_REDIS_PASSWORD="s3cret-pw")
    assert done.returncode == 0, done.stderr
    argv_line, _, rest = done.stdout.partition("\n")
    assert argv_line.startswith("redis-server - ")
    assert "s3cret-pw" not in argv_line
    assert "requirepass s3cret-pw" in rest


def test_redis_refuses_to_start_without_a_password(
    services: dict[str, Any], tmp_path: Path
) -> None:
    done = run_service(services["redis"], tmp_path)
    assert done.returncode != 0
    assert "set HUB_REDIS_PASSWORD in .env.hub" in done.stderr
    assert "redis-server" not in done.stdout


def test_the_hub_is_built_from_the_containerfile_and_publishes_both_ports(
    services: dict[str, Any],
) -> None:
    hub = services["hub"]
    assert hub["build"] == {"context": ".", "dockerfile": "Containerfile"}
    assert hub["env_file"] == ".env.hub"
    assert "profiles" not in hub
    assert {interpolate(p) for p in hub["ports"]} == {"3001:3001", "3002:3002"}
    assert hub["depends_on"]["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize(("service", "program"), [("hub", "emp-hub"), ("worker-1", "emp-worker")])
def test_hub_and_workers_reach_the_compose_redis_with_its_password(
    services: dict[str, Any], tmp_path: Path, service: str, program: str
) -> None:
    done = run_service(services[service], tmp_path, HUB_REDIS_PASSWORD="pw", HUB_REDIS_URL="")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(program)
    assert "url=redis://:pw@redis:6379/0" in done.stdout


def test_a_redis_url_in_env_hub_wins_over_the_compose_redis(
    services: dict[str, Any], tmp_path: Path
) -> None:
    mine = "rediss://emp:pw@redis.example.internal:6380/0"
    done = run_service(services["hub"], tmp_path, HUB_REDIS_PASSWORD="pw", HUB_REDIS_URL=mine)
    assert f"url={mine}" in done.stdout


def test_two_simulation_workers_start_only_with_the_workers_profile(
    services: dict[str, Any],
) -> None:
    workers = {name: s for name, s in services.items() if s.get("profiles") == ["workers"]}
    assert set(workers) == {"worker-1", "worker-2"}
    assert {w["environment"]["SERVICES"] for w in workers.values()} == {"simulation"}
    assert len({w["environment"]["WORKER_ID"] for w in workers.values()}) == 2
    assert {interpolate(w["image"]) for w in workers.values()} == {"emp-redis-hub:latest"}


def containerfile() -> str:
    return (ROOT / "Containerfile").read_text(encoding="utf-8")


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", containerfile())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(f"{name} ")]


def test_the_image_label_carries_this_release_s_version() -> None:
    assert f"VERSION={__version__}" in instructions("ARG")


def test_the_base_is_a_build_argument_used_by_both_stages() -> None:
    assert any(arg.startswith("BASE_IMAGE=") for arg in instructions("ARG"))
    assert [f.split()[0] for f in instructions("FROM")] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_the_hub_runs_as_pid_1_unprivileged_with_its_data_in_a_volume() -> None:
    assert instructions("USER") == ["emp"]
    assert instructions("VOLUME") == ["/data"]
    assert instructions("EXPOSE") == ["3001 3002"]
    (entrypoint,) = instructions("ENTRYPOINT")
    assert entrypoint.startswith('["emp-hub"')  # exec form: no shell between SIGTERM and the hub
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/ready" in healthcheck


def test_no_setting_is_baked_in_but_where_it_listens_and_keeps_data() -> None:
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", " ".join(instructions("ENV"))))
    settings = {n for n in names if n.startswith(("HUB_", "REDIS", "WS_", "WORKER_"))}
    assert settings == {"HUB_DATA_DIR", "HUB_HOST"}
