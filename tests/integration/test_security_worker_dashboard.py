"""The worker dashboard against the attacks of security issue item 8.

- Slowloris and idle connections: the dashboard had no head deadline and no connection
  limit (a connection trickling its head was held over 30 s; 100 idle ones were never
  closed). It now runs the hub's connection guard (shared/http_guard.py).
- DNS rebinding: `GET /api/status` answered any Host, so a web page whose name resolves to
  127.0.0.1 could read job and customer ids from the operator's own browser.
- Names without a token, and a client-grade token for actions: the status named jobs and
  customers to anyone, and pause and cancel accepted HUB_AUTH_TOKEN, a client's token.

The worker is the stand-in of test_worker_dashboard.py; the server is real (uvicorn on a
free port) where the attack needs a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.integration.test_worker_dashboard import FakeWorker
from worker.dashboard.server import DashboardServer, http_protocol
from worker.settings import WorkerSettings

OPERATOR_TOKEN = "worker-operator-token-1"
CLIENT_TOKEN = "worker-client-token-1"  # what every client of the hub holds
HEADER_TIMEOUT = 0.5
MAX_CONNECTIONS = 4
PATIENCE = 20.0  # how long a test waits for the server to act (a bound, not a timing)


def settings(**env: str) -> WorkerSettings:
    return WorkerSettings.from_env(
        {
            "HUB_REDIS_URL": "redis://127.0.0.1:1/0",
            "WORKER_ID": "gpu-box-1-gpu0",
            "HUB_AUTH_TOKEN": CLIENT_TOKEN,
            "HUB_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "WORKER_DASHBOARD_HOST": "127.0.0.1",
            "WORKER_DASHBOARD_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "WORKER_DASHBOARD_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            **env,
        }
    )


@contextlib.asynccontextmanager
async def dashboard(**env: str) -> AsyncIterator[tuple[FakeWorker, int]]:
    fake = FakeWorker()
    fake.settings = settings(**env)
    server = DashboardServer(fake, fake.settings)
    url = await server.start()
    try:
        yield fake, int(url.rsplit(":", 1)[1])
    finally:
        await server.stop()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), PATIENCE)


async def test_slow_and_idle_connections_are_closed_and_capped() -> None:
    """Attack: a slowloris connection trickling its request head, idle connections that
    send nothing, and more of them than the dashboard should hold. Refused: past
    WORKER_DASHBOARD_MAX_CONNECTIONS a connection gets 503 at once; an idle one is closed
    after WORKER_DASHBOARD_HEADER_TIMEOUT_SECONDS; a head still trickling then gets 408."""
    async with dashboard() as (_, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await closed_by_server(extra_reader)).startswith(b"HTTP/1.1 503")
        extra_writer.close()
        for reader, writer in idle:
            assert await closed_by_server(reader) == b""  # closed silently, like keep-alive
            writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n")
        answer = asyncio.ensure_future(closed_by_server(reader))
        while not answer.done():  # the attack: one more header line now and then
            writer.write(b"X-Slow: still-coming\r\n")
            await asyncio.wait({answer}, timeout=HEADER_TIMEOUT / 5)
        assert (await answer).startswith(b"HTTP/1.1 408")
        writer.close()


async def test_other_host_names_are_refused() -> None:
    """Attack: DNS rebinding. A page on evil.example re-points its name at 127.0.0.1 and
    reads /api/status from the operator's browser as same-origin. Refused: any Host not in
    WORKER_DASHBOARD_HOSTS (default: loopback names and the bound address) gets 421, with
    nothing about the worker; the loopback names still work."""
    async with (
        dashboard() as (fake, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            for path in ("/api/status", "/"):
                response = await http.get(path, headers={"Host": host})
                assert response.status_code == 421, (host, path)
                assert response.json()["error"]["field"] == "Host"
                assert fake.id not in response.text
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST"):
            assert (await http.get("/api/status", headers={"Host": host})).status_code == 200
    async with (
        dashboard(WORKER_DASHBOARD_HOSTS="gpu-box-1.lan") as (_, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        ok = await http.get("/api/status", headers={"Host": f"gpu-box-1.lan:{port}"})
        assert ok.status_code == 200
        assert (await http.get("/api/status")).status_code == 421  # only the names given


async def test_job_and_customer_ids_and_actions_need_the_operator_token() -> None:
    """Attack: read job and customer ids without any token, and pause or cancel with a
    client-grade token (HUB_AUTH_TOKEN: any client of the hub has one). Refused: the open
    view names no job and no customer; the client token is refused (401) for the full view
    and for every action; the operator's token (HUB_OPERATOR_TOKEN) gets both."""
    async with (
        dashboard() as (fake, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        fake.capabilities = fake.capabilities.__class__(
            services=["simulation"],
            customer_access=fake.capabilities.customer_access.__class__(
                isolation="loose", denied_customers=["globex"]
            ),
        )
        for path in ("/api/status", "/"):
            text = (await http.get(path)).text
            for name in ("job-1", "acme", "globex", "step 2/5"):
                assert name not in text, (path, name)
        client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        assert (await http.get("/api/status", headers=client)).status_code == 401
        full = (await http.get("/api/status", headers=operator)).json()
        assert (full["running"][0]["job_id"], full["running"][0]["customer_id"]) == (
            "job-1",
            "acme",
        )
        assert full["capabilities"]["customer_access"]["denied_customers"] == ["globex"]
        for path in ("/api/pause", "/api/jobs/job-1/cancel"):
            refused = await http.post(path, headers=client)
            assert refused.status_code == 401, path
        assert fake.calls == []
        assert (await http.post("/api/pause", headers=operator)).json() == {"state": "paused"}
        assert fake.calls == [("set_state", "paused")]


def test_without_httptools_the_dashboard_says_it_runs_unguarded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """worker.pyz ships httptools for the guard; a worker run where it cannot be imported
    falls back to uvicorn's h11 protocol and says, once, at start, that it is unguarded."""
    monkeypatch.setitem(sys.modules, "shared.http_guard", None)  # import now fails
    with caplog.at_level(logging.WARNING, logger="worker.dashboard"):
        assert http_protocol(settings()) == "h11"
    assert [
        r.getMessage() for r in caplog.records if "WITHOUT its connection guard" in r.getMessage()
    ]
