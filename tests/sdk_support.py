"""Helpers for the SDK and CLI tests: a real hub (uvicorn, in the test's loop) with a real
worker (the simulation connector, in the same loop), both on the test's private Redis, and
SDK clients pointed at it.

The blocking `Client` must not run on the loop that serves the hub: tests call it through
`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from emp import AsyncClient, JobEvent, JobStatus, RetryPolicy, Snapshot
from shared.settings import BrokerSettings
from tests.hub_support import (
    ACME_TOKEN,
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    RunningHub,
    hub_settings,
    running_hub,
)
from tests.tcp_proxy import PausableProxy
from tests.worker_support import running_worker, worker_settings

__all__ = ["ACME_TOKEN", "CLIENT_TOKEN", "OPERATOR_TOKEN", "RunningHub"]

# Retries without waiting: the tests are about whether a request is repeated, not when.
QUICK = RetryPolicy(attempts=4, backoff=0.0, max_backoff=0.0)
# A simulated job that runs until cancelled (1,000 steps of 100 ms).
LONG = {"steps": 1000, "step_ms": 100}


def sim(**payload: Any) -> dict[str, Any]:
    """A quick simulated job's payload."""
    return {"steps": 3, "step_ms": 1, **payload}


@contextlib.asynccontextmanager
async def hub_with_worker(
    redis_url: str, broker: BrokerSettings, *, worker: bool = True, **hub: Any
) -> AsyncIterator[RunningHub]:
    """A hub, and (unless `worker=False`) one simulation worker, `w1`, registered."""
    async with running_hub(hub_settings(redis_url, broker, **hub)) as running:
        if not worker:
            yield running
            return
        async with running_worker(worker_settings(redis_url, "w1")):
            yield running


@contextlib.asynccontextmanager
async def proxy_to(hub: RunningHub) -> AsyncIterator[PausableProxy]:
    """A TCP proxy in front of the hub (its URL: `proxied(proxy)`), to cut connections or
    lose answers between the SDK and the hub."""
    proxy = await PausableProxy(int(hub.url.rsplit(":", 1)[1])).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def proxied(proxy: PausableProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


def client(url: str, token: str = CLIENT_TOKEN, **options: Any) -> AsyncClient:
    options.setdefault("retry", QUICK)
    return AsyncClient(url, token=token, **options)


class Recording(httpx.AsyncBaseTransport):
    """httpx's transport, keeping every request it sends (what the SDK put on the wire)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def sent(self, method: str, path_start: str) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == method and r.url.path.startswith(path_start)
        ]


async def until_running(emp: AsyncClient, job_id: str) -> None:
    """Follow the job's events until a worker has it (and its first step is under way)."""
    async with asyncio.timeout(10), emp.events(job_id) as stream:
        async for item in stream:
            if isinstance(item, Snapshot) and item.job.status is JobStatus.ACTIVE:
                return
            if isinstance(item, JobEvent) and item.type in ("claimed", "progress"):
                return
    raise AssertionError(f"job {job_id} finished before it was seen running")
