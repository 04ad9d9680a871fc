"""The `emp` command line as a user runs it: a separate process (`python -m emp`, what the
console script calls) against a real hub and worker, configured by EMP_HUB_URL / EMP_TOKEN
or flags, read by its output and exit code (0 ok, 1 job failed, 2 bad input, 3 no hub)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.settings import BrokerSettings
from tests.sdk_support import (
    CLIENT_TOKEN,
    LONG,
    OPERATOR_TOKEN,
    RunningHub,
    client,
    hub_with_worker,
    sim,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(hub: str | None, token: str | None) -> dict[str, str]:
    # Nor the size of the terminal the tests were started from (pytest-xdist's processes set
    # COLUMNS): a test that gives the CLI a terminal says how wide it is.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EMP_") and k not in ("COLUMNS", "LINES")
    }
    env["PYTHONPATH"] = str(ROOT)
    if hub is not None:
        env["EMP_HUB_URL"] = hub
    if token is not None:
        env["EMP_TOKEN"] = token
    return env


async def emp(*args: str, hub: str | None, token: str | None = CLIENT_TOKEN) -> Ran:
    """Run `emp ARGS` to its end (the hub keeps serving on this loop meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emp", *args,
        env=cli_env(hub, token), cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def closed_port_url() -> str:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{placeholder.getsockname()[1]}"


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    async with hub_with_worker(redis_url, broker_settings) as running:
        yield running


async def test_submit_and_wait_prints_the_finished_job(hub: RunningHub) -> None:
    payload = json.dumps(sim(result="hello"))
    ran = await emp(
        "submit", "--service", "simulation", "--payload", payload, "--wait", hub=hub.url
    )
    assert ran.code == 0, ran.err
    assert "status    completed" in ran.lines
    assert "worker    w1" in ran.lines
    as_json = await emp(
        "submit", "--service", "simulation", "--payload", payload, "--wait", "--json", hub=hub.url
    )
    assert as_json.code == 0
    job = as_json.json()
    assert job["status"] == "completed"
    assert job["result"]["result"] == "hello"


async def test_a_job_that_fails_exits_1_with_its_error(hub: RunningHub) -> None:
    payload = json.dumps(sim(fail="out of memory"))
    ran = await emp(
        "submit", "--service", "simulation", "--payload", payload, "--max-retries", "0", "--wait",
        hub=hub.url,
    )  # fmt: skip
    assert ran.code == 1
    assert "status    failed" in ran.lines
    assert any(line.startswith("error") and "out of memory" in line for line in ran.lines)


async def test_submit_prints_just_the_id_then_status_and_watch_follow_it(hub: RunningHub) -> None:
    payload = json.dumps(sim(steps=3, step_ms=50))
    submitted = await emp("submit", "--service", "simulation", "--payload", payload, hub=hub.url)
    (job_id,) = submitted.lines  # ID=$(emp submit ...) works
    watched = await emp("watch", job_id, hub=hub.url)
    assert watched.code == 0
    assert watched.lines[-1] == f"{job_id} completed"
    assert any(line.startswith("snapshot") for line in watched.lines)
    status = await emp("status", job_id, "--json", hub=hub.url)
    assert status.json()["id"] == job_id
    assert status.json()["status"] == "completed"
    events = await emp("watch", job_id, "--json", hub=hub.url)
    (only,) = [json.loads(line) for line in events.lines]  # finished: its snapshot alone
    assert (only["type"], only["job"]["status"]) == ("snapshot", "completed")


async def test_workflow_file_and_requirements_reach_the_hub(
    hub: RunningHub, tmp_path: Path
) -> None:
    workflow = {"3": {"class_type": "KSampler", "inputs": {"seed": 7}}}
    (tmp_path / "wf.json").write_text(json.dumps(workflow), encoding="utf-8")
    ran = await emp(
        "submit", "--service", "comfyui", "--workflow", str(tmp_path / "wf.json"),
        "--payload", '{"client": "cli"}', "--priority", "80", "--tag", "night",
        "--require", "gpu.memory_gb=24", "--require", "models=a.safetensors,b.pt",
        "--require", "region=eu", "--json",
        hub=hub.url,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    submitted = ran.json()
    assert submitted["requirements"] == {
        "hardware": {"gpu": {"memory_gb": 24}},
        "models": ["a.safetensors", "b.pt"],
        "geographic": {"region": "eu"},
    }
    assert (submitted["priority"], submitted["tags"]) == (80, ["night"])
    shown = (await emp("status", submitted["id"], "--json", hub=hub.url)).json()
    assert shown["payload"] == {"client": "cli", "workflow": workflow}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["submit", "--service", "simulation", "--payload", "{not json"], "--payload"),
        (["submit", "--service", "simulation", "--require", "gpu.memory_gb"], "KEY=VALUE"),
        (["submit", "--service", "simulation", "--workflow", "/no/such/wf.json"], "cannot read"),
        (["submit", "--service", "simulation", "--priority", "101"], "400 priority"),
        (["submit", "--service", "simulation", "--require", "gpu.memry_gb=8"], "memry_gb"),
        (["status", "no-such-job"], "404 id: no such job"),
        (["submit", "--payload", "{}"], "--service"),
    ],
    ids=["payload", "require", "workflow", "priority", "requirement-typo", "unknown-job", "usage"],
)
async def test_bad_input_exits_2_and_says_what(
    hub: RunningHub, args: list[str], complaint: str
) -> None:
    ran = await emp(*args, hub=hub.url)
    assert ran.code == 2
    assert complaint in ran.err
    assert ran.out == ""


async def test_no_hub_exits_3() -> None:
    ran = await emp("status", "job-1", hub=closed_port_url())
    assert ran.code == 3
    assert "no answer from" in ran.err


async def test_jobs_lists_a_table_or_json(redis_url: str, broker_settings: BrokerSettings) -> None:
    async with hub_with_worker(redis_url, broker_settings, worker=False) as hub:
        async with client(hub.url) as sdk:
            ids = [(await sdk.submit("nobody-serves", {"n": n})).id for n in range(3)]
        table = await emp("jobs", "--status", "pending", hub=hub.url)
        as_json = await emp("jobs", "--json", "--limit", "2", hub=hub.url)
        none = await emp("jobs", "--status", "failed", hub=hub.url)
    header, *rows = table.lines
    assert header.split() == [
        "ID", "STATUS", "SERVICE", "CUSTOMER", "PRIORITY", "PROGRESS", "WORKER", "CREATED"
    ]  # fmt: skip
    assert [row.split()[:3] for row in rows] == [[i, "pending", "nobody-serves"] for i in ids]
    assert [job["id"] for job in as_json.json()] == ids[:2]
    assert none.lines == ["no jobs"]


async def test_cancel_then_a_second_cancel_is_refused(hub: RunningHub) -> None:
    async with client(hub.url) as sdk:
        handle = await sdk.submit("simulation", LONG)
    cancelled = await emp("cancel", handle.id, "--reason", "test", hub=hub.url)
    assert cancelled.code == 0
    assert cancelled.lines == [f"{handle.id} cancelled"]
    again = await emp("cancel", handle.id, hub=hub.url)
    assert again.code == 2
    assert "409 status" in again.err


async def test_operators_retry_failed_jobs(hub: RunningHub) -> None:
    async with client(hub.url) as sdk:
        handle = await sdk.submit("simulation", sim(fail="flaky"), max_retries=0)
        await handle.wait(timeout=30)
    refused = await emp("retry", handle.id, hub=hub.url)  # a client token
    assert refused.code == 2
    assert "403" in refused.err
    retried = await emp("retry", handle.id, "--json", hub=hub.url, token=OPERATOR_TOKEN)
    assert retried.code == 0
    assert retried.json()["id"] == handle.id
    assert retried.json()["status"] in ("pending", "active", "failed")


async def test_workers_stats_and_top_show_the_fleet(hub: RunningHub) -> None:
    workers = await emp("workers", hub=hub.url, token=OPERATOR_TOKEN)
    header, row = workers.lines
    assert header.split() == ["ID", "STATUS", "STATE", "GPU", "MODELS", "JOB"]
    assert row.split()[:3] == ["w1", "idle", "active"]
    stats = await emp("stats", hub=hub.url, token=OPERATOR_TOKEN)
    assert stats.lines[0].startswith("pending     0")
    assert "workers     1  idle 1" in stats.lines
    top = await emp("top", "--once", hub=hub.url, token=OPERATOR_TOKEN)
    assert top.lines[0].startswith(f"emp top  {hub.url}")
    assert any(line.startswith("w1 ") for line in top.lines)
    frame = (await emp("top", "--once", "--json", hub=hub.url, token=OPERATOR_TOKEN)).json()
    assert [w["id"] for w in frame["workers"]] == ["w1"]
    assert frame["stats"]["workers"]["total"] == 1
    as_client = await emp("workers", hub=hub.url)
    assert as_client.code == 2


async def test_flags_win_over_the_environment_before_or_after_the_command(
    hub: RunningHub,
) -> None:
    env_elsewhere = closed_port_url()
    after = await emp(
        "jobs", "--hub", hub.url, "--token", CLIENT_TOKEN, hub=env_elsewhere, token="wrong"
    )
    before = await emp("--hub", hub.url, "--json", "jobs", hub=env_elsewhere, token=CLIENT_TOKEN)
    assert after.code == 0, after.err
    assert before.code == 0, before.err
    assert before.json() == []


async def test_watch_draws_a_progress_bar_on_a_terminal(hub: RunningHub) -> None:
    async with client(hub.url) as sdk:
        handle = await sdk.submit("simulation", sim(steps=4, step_ms=50))
    screen, terminal = pty.openpty()
    # 120 columns, 24 lines: room for the whole line (a pty is 0 x 0 until told).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emp", "watch", handle.id,
        env=cli_env(hub.url, CLIENT_TOKEN), cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=terminal, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    shown = await asyncio.to_thread(read_until_closed, screen)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert f"\r{handle.id}  [" in shown  # redrawn in place
    assert "\x1b[K" in shown
    assert "[" + "#" * 30 + "] 100%  completed" in shown


def read_until_closed(fd: int) -> str:
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:  # EIO: the other end of the terminal closed
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")
