"""Helpers for the hub tests: settings, an in-process client, a real uvicorn server on port 0,
and simulated workers that drive the Broker API directly (the real worker lives elsewhere).

Everything is async and runs on the test's event loop: httpx with ASGITransport for REST
(the app's lifespan entered with asgi-lifespan), a real uvicorn server for WebSocket and
SSE, so no thread or second loop is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect

from hub.app import create_app
from hub.cli import HubServer
from hub.settings import ClientToken, HubSettings
from shared.broker import Broker, Claim
from shared.capabilities import Capabilities, GpuCapability, HardwareCapabilities
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings

CLIENT_TOKEN = "client-token-0001"
ACME_TOKEN = "acme-client-token-01"  # bound to customer "acme"
OPERATOR_TOKEN = "operator-token-0001"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
ACME = {"Authorization": f"Bearer {ACME_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def hub_settings(
    redis_url: str, broker: BrokerSettings | None = None, **overrides: Any
) -> HubSettings:
    base = HubSettings(
        redis=RedisSettings(url=redis_url),
        client_tokens=(ClientToken(CLIENT_TOKEN), ClientToken(ACME_TOKEN, "acme")),
        operator_tokens=(OPERATOR_TOKEN,),
        maintenance=False,
        fleet_cache_seconds=0,
        broker=broker or BrokerSettings(),
    )
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def hub_client(settings: HubSettings, **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fresh app in-process (lifespan entered); `app_options`
    go to create_app."""
    app = create_app(settings, **app_options)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://hub"
        ) as client,
    ):
        client.hub_app = app  # type: ignore[attr-defined]
        yield client


def hub_of_client(client: httpx.AsyncClient) -> Any:
    """The HubContext behind an in-process client (to observe subscribers, metrics...)."""
    return client.hub_app.state.hub  # type: ignore[attr-defined]


@dataclasses.dataclass
class RunningHub:
    app: Starlette
    url: str
    server: HubServer

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


@contextlib.asynccontextmanager
async def running_hub(settings: HubSettings) -> AsyncIterator[RunningHub]:
    """A real uvicorn server on 127.0.0.1, port 0, serving a fresh app."""
    import uvicorn

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = HubServer(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningHub(app, f"http://127.0.0.1:{port}", server)
    finally:
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.begin_shutdown()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def ws_connect(url: str) -> AsyncIterator[ClientConnection]:
    async with connect(url, open_timeout=5, close_timeout=2) as ws:
        yield ws


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    value = orjson.loads(message)
    assert isinstance(value, dict)
    return value


async def recv_until(
    ws: ClientConnection,
    predicate: Any,
    timeout: float = 5.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Receive until `predicate(message)`; returns it and everything received before."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await recv_json(ws, timeout)
            if predicate(msg):
                return msg, seen
            seen.append(msg)


# -- simulated workers ------------------------------------------------------------------


def capabilities(
    services: Sequence[str] = ("comfyui",), gpu_gb: Sequence[float] = (24.0,), **extra: Any
) -> Capabilities:
    gpus = [GpuCapability(memory_gb=g, index=i, name="NVIDIA H200") for i, g in enumerate(gpu_gb)]
    return Capabilities(
        services=list(services),
        hardware=HardwareCapabilities(gpus=gpus, cpu_cores=16, ram_gb=64),
        **extra,
    )


async def start_worker(
    broker: Broker, worker_id: str, caps: Capabilities | None = None, **info: Any
) -> Capabilities:
    caps = caps or capabilities()
    await broker.register_worker(worker_id, caps, info)
    return caps


async def claim(broker: Broker, worker_id: str, caps: Capabilities) -> Claim:
    result = await broker.claim(worker_id, caps)
    assert isinstance(result, Claim), f"nothing to claim: {result}"
    return result
