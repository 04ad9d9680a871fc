"""worker.pyz as operators run it: file size, start-to-registered time and idle memory.

Builds the pyz for this interpreter with build.py (into a temporary directory), then starts it
with the interpreter of a fresh empty venv (`venv --without-pip`), so nothing of the project's
environment can leak in, against a private Redis. "Registered" means the worker id is in the
`workers` sorted set; the clock starts just before the process is spawned. The first run gets
an empty SHIV_ROOT, so it includes shiv's extraction (and the first compile of every module);
later runs reuse that extraction, as every restart of a deployed worker does. Resident memory
is read with psutil (the worker and any children) after the worker has idled for a few seconds,
with the worker dashboard off and on.

Targets (docs/ARCHITECTURE.md#performance-targets): worker.pyz < 20 MB; start-to-registered
< 2 s; RSS < 80 MB. Sizes are in MB (10^6 bytes, as build.py prints them); memory is shown in
MiB and held to 80 MB, i.e. 76.3 MiB, the stricter reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from redis.asyncio import Redis

from bench.common import median, private_redis, table
from shared.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
REGISTER_DEADLINE_S = 60.0
SIZE_TARGET_MB = 20.0
START_TARGET_S = 2.0
RSS_TARGET_BYTES = 80_000_000
RSS_TARGET_MIB = RSS_TARGET_BYTES / 2**20


@dataclass(frozen=True)
class Run:
    """One start of the pyz: seconds to registered, RSS (bytes) once idle, exit status after
    SIGTERM."""

    start_s: float
    rss_bytes: int
    exit_code: int


def build_pyz(tmp: Path) -> tuple[Path, float]:
    """build.py for the running interpreter into `tmp`; the tagged pyz and the build time."""
    out, scratch = tmp / "release", tmp / "build"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), "--out", str(out), "--build-dir", str(scratch)],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"build.py failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    built = sorted(out.glob("worker-*.pyz"))
    if len(built) != 1:
        raise RuntimeError(f"build.py: expected one worker-<tag>.pyz in {out}, found {built}")
    return built[0], elapsed


def bare_python(tmp: Path) -> Path:
    """A fresh venv's interpreter: the standard library and nothing else."""
    venv = tmp / "bare-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)],
        check=True,
        timeout=120,
    )
    return venv / "bin" / "python"


def _rss(pid: int) -> int:
    """Resident memory of a process and its children, in bytes."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as PM2 and systemd stop it; SIGKILL after 30 s. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def start_once(
    python: Path,
    pyz: Path,
    *,
    redis: Redis,
    url: str,
    shiv_root: Path,
    worker_id: str,
    dashboard: bool,
    idle_s: float,
    log: Path,
) -> Run:
    """Start the pyz, time it to registered, let it idle, read its RSS, stop it (SIGTERM)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(shiv_root),
        "LANG": "C.UTF-8",
        "SHIV_ROOT": str(shiv_root),
        "HUB_REDIS_URL": url,
        "SERVICES": "simulation",
        "WORKER_ID": worker_id,
        "WORKER_ENV_FILE": "/nonexistent/.env.worker",
        "WORKER_DASHBOARD_ENABLED": "true" if dashboard else "false",
        "WORKER_DASHBOARD_PORT": str(free_port()),
    }
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(python), str(pyz)], env=env, cwd=shiv_root, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + REGISTER_DEADLINE_S
        while await redis.zscore("workers", worker_id) is None:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker.pyz exited with code {proc.returncode} before registering:\n"
                    f"{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker.pyz did not register within {REGISTER_DEADLINE_S:g} s:\n{_tail(log)}"
                )
            await asyncio.sleep(0.01)
        start_s = time.perf_counter() - started
        await asyncio.sleep(idle_s)
        if proc.poll() is not None:
            raise RuntimeError(f"worker.pyz exited while idle:\n{_tail(log)}")
        rss = _rss(proc.pid)
    except BaseException:
        _stop(proc)
        raise
    return Run(start_s, rss, _stop(proc))


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


async def run(quick: bool) -> str:
    later_runs = 3 if quick else 7
    dashboard_runs = 2 if quick else 5
    idle_s = 3.0 if quick else 5.0
    with tempfile.TemporaryDirectory(prefix="emp-bench-pyz-") as name:
        tmp = Path(name)
        pyz, build_s = await asyncio.to_thread(build_pyz, tmp)
        python = await asyncio.to_thread(bare_python, tmp)
        shiv_root = tmp / "shiv-root"
        shiv_root.mkdir()
        log = tmp / "worker.log"
        async with private_redis() as (url, redis):

            async def start(n: int, dashboard: bool) -> Run:
                return await start_once(
                    python,
                    pyz,
                    redis=redis,
                    url=url,
                    shiv_root=shiv_root,
                    worker_id=f"pyz-bench-{n}",
                    dashboard=dashboard,
                    idle_s=idle_s,
                    log=log,
                )

            first = await start(0, False)
            extracted = _dir_bytes(shiv_root)
            later = [await start(1 + i, False) for i in range(later_runs)]
            with_dash = [await start(100 + i, True) for i in range(dashboard_runs)]
        size = pyz.stat().st_size

    def mib(runs: list[Run]) -> float:
        return median([r.rss_bytes for r in runs]) / 2**20

    off_runs = [first, *later]
    rss_target = f"< {RSS_TARGET_MIB:.1f} MiB (80 MB)"
    start_target = f"< {START_TARGET_S:g} s"
    rows: list[list[object]] = [
        ["pyz size", size / 1e6, "MB", f"< {SIZE_TARGET_MB:g} MB"],
        ["start -> registered, first run (extracts)", first.start_s, "s", start_target],
        [
            f"start -> registered, later runs (median of {later_runs})",
            median([r.start_s for r in later]),
            "s",
            start_target,
        ],
        ["start -> registered, later runs, slowest", max(r.start_s for r in later), "s", ""],
        [
            f"start -> registered, dashboard on (median of {dashboard_runs})",
            median([r.start_s for r in with_dash]),
            "s",
            start_target,
        ],
        [f"RSS idle, dashboard off (median of {len(off_runs)})", mib(off_runs), "MiB", rss_target],
        [f"RSS idle, dashboard on (median of {dashboard_runs})", mib(with_dash), "MiB", rss_target],
        ["extracted on disk (SHIV_ROOT)", extracted / 1e6, "MB", ""],
        [
            "exit status after SIGTERM",
            " ".join(sorted({str(r.exit_code) for r in [*off_runs, *with_dash]})),
            "",
            "",
        ],
        ["build.py", build_s, "s", ""],
    ]
    title = (
        f"pyz: {pyz.name} run by a fresh empty venv's Python, Redis on loopback, "
        f"RSS after {idle_s:g} s idle"
    )
    return table(title, ["what", "value", "unit", "target"], rows)
