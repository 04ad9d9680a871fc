"""worker.pyz as operators run it: built by build.py, started by a Python that has none of the
project's dependencies (a fresh venv without pip), registering with Redis and completing a job;
refusing, in one line, to run under another Python; and cleaning up after older builds."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from shared import __version__
from shared.broker import Broker
from shared.job import JobStatus
from tests.factories import job
from tests.helpers import redis_command
from tests.hub_support import OPERATOR, hub_settings, running_hub
from tests.worker_support import finished, sim
from worker import pyz_guard

# A build takes seconds with a warm pip cache, and up to a minute or two when pip downloads.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
HERE = pyz_guard.running()
HOST_TAG = HERE.tag
BUILD_TIMEOUT = 600

if HERE.os != "linux" or HERE.glibc is None or HERE.implementation != "CPython":
    pytest.skip(
        "worker.pyz is built and tested on glibc Linux with CPython", allow_module_level=True
    )


def build(out: Path, scratch: Path, *args: str, epoch: int | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(epoch)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "build.py"),
            "--out",
            str(out),
            "--build-dir",
            str(scratch),
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"build.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """build.py for this interpreter, once per session: the tagged file and worker.pyz."""
    out = tmp_path_factory.mktemp("release")
    build(out, tmp_path_factory.mktemp("build"))
    return out


@pytest.fixture(scope="session")
def host_pyz(release: Path) -> Path:
    return release / f"worker-{HOST_TAG}.pyz"


@pytest.fixture(scope="session")
def other_python_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-build for another CPython minor on this platform, from manylinux wheels."""
    other = "3.12" if HERE.version != (3, 12) else "3.11"
    out = tmp_path_factory.mktemp("release-other")
    build(
        out,
        tmp_path_factory.mktemp("build-other"),
        "--python",
        other,
        "--platform",
        f"manylinux2014_{HERE.machine}",
    )
    return out / f"worker-{HERE.os}-{HERE.machine}-cp{other.replace('.', '')}.pyz"


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv: the standard library and nothing else."""
    venv = tmp_path_factory.mktemp("bare-venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)],
        check=True,
        timeout=120,
    )
    python = venv / "bin" / "python"
    for module in ("redis", "orjson", "msgspec", "psutil", "shared", "worker"):
        probe = subprocess.run(
            [python, "-c", f"import {module}"],
            env=bare_env(venv),
            cwd=venv,
            capture_output=True,
            timeout=60,
        )
        assert probe.returncode != 0, f"{module} is importable from the bare venv"
    return python


def bare_env(shiv_root: Path, **extra: str) -> dict[str, str]:
    """No PYTHONPATH, no developer .env.worker, the pyz extracting under `shiv_root`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(shiv_root),
        "LANG": "C.UTF-8",
        "SHIV_ROOT": str(shiv_root),
        "WORKER_ENV_FILE": "/nonexistent/.env.worker",
        "WORKER_DASHBOARD_ENABLED": "false",
        "SERVICES": "simulation",
    }
    env.update(extra)
    return env


def run_pyz(
    python: Path, pyz: Path, *args: str, shiv_root: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), str(pyz), *args],
        env=bare_env(shiv_root, **env),
        cwd=shiv_root,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def extractions(shiv_root: Path) -> list[str]:
    return sorted(p.name for p in shiv_root.iterdir() if p.is_dir())


# --- what it holds ----------------------------------------------------------------------------


def test_the_archive_holds_the_dashboard_files_and_not_the_embedded_redis_launcher(
    host_pyz: Path,
) -> None:
    with zipfile.ZipFile(host_pyz) as archive:
        names = set(archive.namelist())
    for path in (
        "worker/dashboard/templates/dashboard.html",
        "worker/dashboard/static/dashboard.css",
        "worker/dashboard/static/dashboard.js",
        "worker/hardware/detection.py",
        "shared/lua/claim.lua",
    ):
        assert f"site-packages/{path}" in names
    assert sorted(name for name in names if "embedded_redis" in name) == []


def test_the_dashboard_page_and_its_static_files_load_inside_the_pyz(
    bare_python: Path, host_pyz: Path, tmp_path: Path
) -> None:
    """Found through importlib.resources from the extracted archive, as the worker finds them."""
    script = (
        "import importlib.util\n"
        "from worker.dashboard.page import load_static, template_environment\n"
        "from worker.dashboard.server import http_protocol\n"
        "from worker.settings import WorkerSettings\n"
        "template_environment().get_template('dashboard.html')\n"
        "guard = http_protocol(WorkerSettings.from_env({'HUB_REDIS_URL': 'redis://x:1/0'}))\n"
        "print(sorted(load_static()), importlib.util.find_spec('shared.embedded_redis'),\n"
        "      guard.__name__)"
    )
    done = run_pyz(bare_python, host_pyz, "-c", script, shiv_root=tmp_path, SHIV_INTERPRETER="1")
    assert done.returncode == 0, done.stderr
    # The dashboard's connection guard is there: httptools ships in the pyz.
    assert done.stdout.strip() == "['dashboard.css', 'dashboard.js'] None GuardedHttpToolsProtocol"


# --- running it -------------------------------------------------------------------------------


def test_version_prints_the_version_and_the_build_tag(
    bare_python: Path, host_pyz: Path, release: Path, tmp_path: Path
) -> None:
    done = run_pyz(bare_python, host_pyz, "--version", shiv_root=tmp_path)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"emp-worker {__version__} ({HOST_TAG} 20"), line
    assert done.stderr == ""
    latest = run_pyz(bare_python, release / "worker.pyz", "--version", shiv_root=tmp_path)
    assert latest.stdout.strip() == line  # worker.pyz is this interpreter's build


def test_detect_prints_the_capabilities_as_json(
    bare_python: Path, host_pyz: Path, tmp_path: Path
) -> None:
    done = run_pyz(
        bare_python,
        host_pyz,
        "detect",
        shiv_root=tmp_path,
        SERVICES="simulation,comfyui",
        GPU_COUNT="2",
        GPU_MEMORY_GB="80",
        GPU_MODEL="NVIDIA H100",
        WORKER_ID="pyz-detect",
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["worker_id"] == "pyz-detect"
    assert report["version"] == __version__
    assert report["build"].startswith(f"{HOST_TAG} ")
    caps = report["capabilities"]
    assert caps["services"] == ["simulation", "comfyui"]
    assert [g["memory_gb"] for g in caps["hardware"]["gpus"]] == [80.0, 80.0]
    assert report["hardware"]["cpu_cores"] >= 1


async def test_registers_and_completes_a_simulation_job(
    bare_python: Path, host_pyz: Path, broker: Broker, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    ids = [(await broker.submit(job("simulation", payload=sim(result=n)))).job_id for n in range(2)]
    done = run_pyz(
        bare_python,
        host_pyz,
        "--burst",
        shiv_root=tmp_path,
        HUB_REDIS_URL=redis_url,
        WORKER_ID="pyz-e2e",
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "worker pyz-e2e registered" in log
    for job_id in ids:
        result = await finished(broker, job_id)
        assert (result.status, result.worker_id) == (JobStatus.COMPLETED, "pyz-e2e"), log
    assert await redis.hget(broker.keys.worker("pyz-e2e"), "status") == b"offline"


async def test_runs_as_the_least_privileged_redis_user_of_the_readme(
    bare_python: Path, host_pyz: Path, broker: Broker, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    readme = (ROOT / "release" / "README.md").read_text("utf-8")
    acl = next(line for line in readme.splitlines() if line.startswith("ACL SETUSER emp-worker "))
    password = "pyz-test-password"
    await redis_command(redis, "ACL", *acl.replace(">change-me", f">{password}").split()[1:])
    try:
        job_id = (await broker.submit(job("simulation", payload=sim()))).job_id
        scheme, rest = redis_url.split("://", 1)
        worker_url = f"{scheme}://emp-worker:{password}@{rest.split('@')[-1]}"
        done = run_pyz(
            bare_python,
            host_pyz,
            "--burst",
            shiv_root=tmp_path,
            HUB_REDIS_URL=worker_url,
            WORKER_ID="pyz-acl",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = await finished(broker, job_id)
        assert (result.status, result.worker_id) == (JobStatus.COMPLETED, "pyz-acl")
    finally:
        await redis_command(redis, "ACL", "DELUSER", "emp-worker")


async def test_runs_through_the_hub_gateway_without_redis_credentials(
    bare_python: Path, host_pyz: Path, broker: Broker, redis_url: str, tmp_path: Path
) -> None:
    """An untrusted box: worker.pyz gets a hub URL and a gateway token, no Redis URL."""
    async with running_hub(hub_settings(redis_url)) as hub:
        async with hub.client() as http:
            issued = await http.post(
                "/gateway/grants",
                json={"worker_id": "pyz-gateway", "services": ["simulation"]},
                headers=OPERATOR,
            )
            assert issued.status_code == 201, issued.text
        job_id = (await broker.submit(job("simulation", payload=sim()))).job_id
        done = await asyncio.to_thread(
            run_pyz,
            bare_python,
            host_pyz,
            "--burst",
            shiv_root=tmp_path,
            WORKER_GATEWAY_URL=hub.url,
            WORKER_GATEWAY_TOKEN=issued.json()["token"],
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = await finished(broker, job_id)
        assert (result.status, result.worker_id) == (JobStatus.COMPLETED, "pyz-gateway")
        assert "connected to the hub gateway" in done.stderr + done.stdout


# --- the wrong Python -------------------------------------------------------------------------


def test_another_python_gets_one_clear_line_and_exit_2(
    bare_python: Path, other_python_pyz: Path, tmp_path: Path
) -> None:
    renamed = tmp_path / "dist" / "worker.pyz"
    renamed.parent.mkdir()
    shutil.copyfile(other_python_pyz, renamed)
    root = tmp_path / "shiv"
    root.mkdir()
    for pyz, shown in (
        (other_python_pyz, other_python_pyz.name),
        (renamed, f"worker.pyz ({other_python_pyz.name})"),
    ):
        done = run_pyz(bare_python, pyz, "--version", shiv_root=root)
        assert done.returncode == 2
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        here = f"CPython {HERE.version[0]}.{HERE.version[1]} on linux {HERE.machine}"
        assert lines[0].startswith(f"emp-worker: {shown} was built for CPython 3.")
        assert (
            f"; this is {here}: download worker-{HOST_TAG}.pyz (or run this file with python3."
            in lines[0]
        )
    assert extractions(root) == []  # a useless extraction is not left behind


# --- upgrades ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def older_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same target built from the same tree on another day: another build id."""
    out = tmp_path_factory.mktemp("release-older")
    build(out, tmp_path_factory.mktemp("build-older"), epoch=1_700_000_000)
    return out / f"worker-{HOST_TAG}.pyz"


def install(src: Path, dest: Path) -> None:
    """What an operator's upgrade does: replace the file under the same name."""
    partial = dest.with_name(".partial")
    shutil.copyfile(src, partial)
    os.replace(partial, dest)


@pytest.fixture
def held_run(bare_python: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def wait_held(extraction: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until a process holds its shared lock on `extraction` (an exclusive try fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the held run exited"
        if (extraction / pyz_guard.IN_USE).exists():
            fd = os.open(extraction / pyz_guard.IN_USE, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            finally:
                os.close(fd)
        time.sleep(0.05)
    raise AssertionError(f"nothing holds {extraction}")


def test_upgrades_remove_older_extractions_once_no_run_uses_them(
    bare_python: Path,
    host_pyz: Path,
    older_build: Path,
    tmp_path: Path,
    held_run: list[subprocess.Popen[bytes]],
) -> None:
    root = tmp_path / "shiv"
    root.mkdir()
    deployed = tmp_path / "worker.pyz"
    install(older_build, deployed)
    old = run_pyz(bare_python, deployed, "--version", shiv_root=root)
    assert old.returncode == 0, old.stderr
    [old_dir] = extractions(root)
    # A worker of the old build keeps running (an interactive shiv session stands in for it).
    running = subprocess.Popen(
        [str(bare_python), str(deployed)],
        env=bare_env(root, SHIV_INTERPRETER="1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    held_run.append(running)
    wait_held(root / old_dir, running)

    install(host_pyz, deployed)
    new = run_pyz(bare_python, deployed, "--version", shiv_root=root)
    assert new.returncode == 0, new.stderr
    assert new.stdout != old.stdout  # another build
    assert len(extractions(root)) == 2
    assert old_dir in extractions(root)  # still in use: kept

    assert running.stdin is not None
    running.stdin.close()
    assert running.wait(timeout=30) == 0
    again = run_pyz(bare_python, deployed, "--version", shiv_root=root)
    assert again.returncode == 0, again.stderr
    [left] = extractions(root)
    assert left != old_dir
    assert left.startswith("worker.pyz_")
    assert not [p.name for p in root.iterdir() if old_dir in p.name]  # nor its lock file


# --- reproducibility --------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_one_tree_are_identical(host_pyz: Path, tmp_path: Path) -> None:
    build(tmp_path / "out", tmp_path / "scratch")
    assert sha256(tmp_path / "out" / host_pyz.name) == sha256(host_pyz)
    assert sha256(tmp_path / "out" / "worker.pyz") == sha256(host_pyz)
