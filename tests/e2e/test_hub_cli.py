"""`python -m hub` as a real process: embedded Redis, banner, both ports, clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.hub_support import OPERATOR_TOKEN, recv_json, ws_connect
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.e2e


def hub_env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HUB_", "WS_", "REDIS", "LOG_", "CUSTOMER_"))
    }
    env.update(
        PYTHONPATH=str(ROOT),
        HUB_HOST="127.0.0.1",
        HUB_PORT="0",
        WS_PORT="0",
        HUB_DATA_DIR=str(tmp_path / "redis"),
        HUB_AUTH_TOKEN="client-token-e2e",
        HUB_OPERATOR_TOKEN=OPERATOR_TOKEN,
        LOG_FORMAT="json",
    )
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


async def run_hub(tmp_path: Path, *args: str, **env: str | None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub", "--env-file", str(tmp_path / ".env.hub"), *args,
        cwd=tmp_path, env=hub_env(tmp_path, **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def read_banner(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("hub exited before its banner: " + "".join(lines))
            lines.append(line)
            if line.strip().startswith("auth:"):
                return "".join(lines)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_hub_process_with_embedded_redis(tmp_path: Path) -> None:
    ws_port = free_port()
    proc = await run_hub(tmp_path, WS_PORT=str(ws_port))
    try:
        banner = await read_banner(proc)
        assert "embedded" in banner
        assert "AOF" in banner
        assert "REDIS_URL=redis://127.0.0.1:" in banner
        assert "dashboard:  http://127.0.0.1:" in banner
        assert OPERATOR_TOKEN not in banner
        api_port = int(re.search(r"api: +http://127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        redis_port = int(re.search(r"REDIS_URL=redis://127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        assert f"ws://127.0.0.1:{ws_port}/ws" in banner
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as http:
            assert (await http.get("/health")).status_code == 200
            response = await http.post(
                "/jobs",
                json={"service_type": "comfyui"},
                headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
            )
            assert response.status_code == 201
        async with ws_connect(f"ws://127.0.0.1:{ws_port}/ws?token={OPERATOR_TOKEN}") as ws:
            assert (await recv_json(ws))["role"] == "operator"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            code = await proc.wait()
        assert code == 0
        assert not port_open(redis_port), "the embedded Redis must stop with the hub"
        assert (tmp_path / "redis" / "appendonlydir").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    logs = (await proc.stderr.read()).decode()
    assert OPERATOR_TOKEN not in logs


@pytest.mark.parametrize(
    ("env_file", "env", "needle"),
    [
        ("HUB_TYPO=1\n", {}, "HUB_TYPO"),
        ("", {"HUB_AUTH_TOKEN": "", "HUB_OPERATOR_TOKEN": ""}, "HUB_AUTH=off"),
        ("HUB_PORT=eighty\n", {"HUB_PORT": None}, "HUB_PORT"),
    ],
)
async def test_bad_configuration_stops_the_hub(
    tmp_path: Path, env_file: str, env: dict[str, str | None], needle: str
) -> None:
    (tmp_path / ".env.hub").write_text(env_file)
    proc = await run_hub(tmp_path, **env)
    try:
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 2
    assert needle in err.decode()


async def test_check_flag_validates_and_exits(tmp_path: Path) -> None:
    proc = await run_hub(
        tmp_path, "--check", HUB_AUTH="off", HUB_AUTH_TOKEN=None, HUB_OPERATOR_TOKEN=None
    )
    try:
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert b"configuration ok" in out
    assert b"WITHOUT authentication" in err
