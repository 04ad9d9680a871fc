"""The README's run command: the demo comes up, its jobs complete, Ctrl-C leaves nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import wait_until_sync
from tests.process_support import ROOT, process_env

pytestmark = pytest.mark.e2e


def test_demo_runs_its_jobs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.demo", "--any-port", "--workdir", str(tmp_path)],
        cwd=ROOT,
        env=process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not lines or lines[-1].strip() != "demo ready":
            line = proc.stdout.readline()
            assert line, "demo exited early:\n" + "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "no 'demo ready' within 120 s"
        text = "".join(lines)
        hub = re.search(r"Hub dashboard:\s+(http://localhost:\d+)/", text)
        token = re.search(r"Bearer (cl-[0-9a-f]+)", text)
        assert hub, text
        assert token, text
        job_ids = re.findall(r"^\s+(job-[0-9a-f]{32})\s", text, re.M)
        assert len(job_ids) == 8
        assert len(re.findall(r"http://localhost:\d+$", text, re.M)) == 3  # worker dashboards
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # hub, its Redis, three workers

        # Printed in the demo's order: the first is the long job (60 steps of 250 ms). The
        # others complete; the long one is stopped mid-run by the Ctrl-C below, which is the
        # harder case for a clean stop (its worker hands it back while it runs).
        long_job, *short_jobs = job_ids
        assert "long job" in text.split(long_job, 1)[1].splitlines()[0]

        def short_jobs_done_and_long_one_running() -> bool:
            with httpx.Client(
                base_url=hub.group(1), headers={"Authorization": f"Bearer {token.group(1)}"}
            ) as http:
                if any(http.get(f"/jobs/{j}").json()["status"] != "completed" for j in short_jobs):
                    return False
                long = http.get(f"/jobs/{long_job}").json()
                return bool(long["status"] == "active" and float(long["progress"]) > 0)

        wait_until_sync(
            short_jobs_done_and_long_one_running,
            timeout=120,
            interval=0.2,
            message="the demo's short jobs complete while the long one shows progress",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
