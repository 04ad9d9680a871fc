"""Webhook test support: a real receiver on loopback that verifies every delivery with the
reference Standard Webhooks package (`standardwebhooks`), as a customer's receiver would, and
hub settings that let webhooks reach it.

The receiver is a Starlette app served by uvicorn on 127.0.0.1 (port 0), on the test's event
loop. `respond` decides each answer (default 204), so a test can make it fail, hang, redirect
or stream an endless body; every request is recorded whatever it answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import standardwebhooks
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.cli import HubServer
from hub.webhooks.settings import WebhookSettings
from tests.helpers import wait_until

SECRET = "whsec_" + base64.b64encode(b"emp-redis webhook test secret!!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some other receiver's secret...!").decode()
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def webhook_settings(**overrides: Any) -> WebhookSettings:
    """Fast retries, short deadlines and loopback allowed: the receiver lives there."""
    values: dict[str, Any] = {
        "secret": SECRET,
        "allow": LOOPBACK,
        "timeout": 2.0,
        "claim_idle": 5.0,
        "retry_base": 0.05,
        "retry_cap": 0.2,
        "retry_for": 60.0,
        **overrides,
    }
    return WebhookSettings(**values)


@dataclass(frozen=True)
class Delivery:
    """One request the receiver got. `payload` is what standardwebhooks.verify returned
    (None when verification failed: `refused` says why)."""

    path: str
    headers: dict[str, str]
    body: bytes
    payload: Any
    refused: str | None

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


Respond = Callable[[Delivery, int], Awaitable[Response]]


async def accept(delivery: Delivery, attempt: int) -> Response:
    return Response(status_code=204)


@dataclass
class Receiver:
    """Records every request and verifies it with `secret`; `respond(delivery, n)` answers
    the n-th request (0-based) for that webhook-id."""

    secret: str = SECRET
    respond: Respond = accept
    deliveries: list[Delivery] = field(default_factory=list)
    url: str = ""
    # Set when the receiver stops: answers that hang (`respond` awaiting it) end then.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _per_id: Counter[str] = field(default_factory=Counter)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = standardwebhooks.Webhook(self.secret).verify(body, headers)
            refused = None
        except standardwebhooks.WebhookVerificationError as exc:
            payload, refused = None, str(exc)
        delivery = Delivery(request.url.path, headers, body, payload, refused)
        self.deliveries.append(delivery)
        attempt = self._per_id[delivery.id]
        self._per_id[delivery.id] += 1
        return await self.respond(delivery, attempt)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])

    @property
    def verified(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.refused is None]

    def ids(self) -> Counter[str]:
        return Counter(d.id for d in self.deliveries)

    def for_job(self, job_id: str) -> list[Delivery]:
        return [d for d in self.verified if d.payload["data"]["job_id"] == job_id]


@contextlib.asynccontextmanager
async def receiving(
    receiver: Receiver | None = None, *, path: str = "/hook"
) -> AsyncIterator[Receiver]:
    """Serve `receiver` on 127.0.0.1 for the block; its `url` ends in `path`."""
    receiver = receiver or Receiver()
    config = uvicorn.Config(
        receiver.app(), host="127.0.0.1", port=0, lifespan="off", log_config=None
    )
    server = HubServer(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10)
        if task.done():
            task.result()
            raise AssertionError("the receiver stopped before it started")
        port = server.servers[0].sockets[0].getsockname()[1]
        receiver.url = f"http://127.0.0.1:{port}{path}"
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
