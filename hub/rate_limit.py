"""Per-token rate limits: a token bucket per client token, kept in Redis so all hubs share it.

Off unless HUB_RATE_LIMIT_PER_SECOND is set. Each authenticated request of a client token
(HTTP, and the handshake of a WebSocket) takes one request from its token's bucket
(`rate_limit.lua`: refilled at the rate, holding at most HUB_RATE_LIMIT_BURST); an empty
bucket is answered 429 with Retry-After (a WebSocket handshake is closed with 1013, "try
again later"). The bucket is named by the token's sha256, never the token. Operators are
not limited: the dashboard and the operator's tools must work while clients are throttled.
When Redis cannot answer, the request goes ahead: the route it reaches needs Redis anyway,
and answers that outage in its own way.
"""

from __future__ import annotations

import logging
import math

from starlette.types import ASGIApp, Receive, Scope, Send

from hub.auth import Principal
from hub.errors import error_body
from hub.http_helpers import json_response
from shared.redis_client import TRANSIENT_ERRORS

log = logging.getLogger("hub.rate_limit")


class RateLimitMiddleware:
    """Pure ASGI, inside AuthMiddleware (it reads the Principal that one stored)."""

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("auth")
        if (
            self.rate <= 0
            or scope["type"] not in ("http", "websocket")
            or not isinstance(principal, Principal)
            or principal.role != "client"
            or principal.bucket is None
        ):
            await self.app(scope, receive, send)
            return
        hub = getattr(scope["app"].state, "hub", None)
        wait_ms = 0
        if hub is not None:
            try:
                # The default pool's Broker: a token's bucket belongs to no pool (it limits
                # the token across all of them), so every hub must find it in one place.
                wait_ms = await hub.broker.take_request(principal.bucket, self.rate, self.burst)
            except TRANSIENT_ERRORS as exc:
                log.warning("rate limit not checked, Redis unavailable: %s", type(exc).__name__)
        if not wait_ms:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait_ms / 1000))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "rate limited"})
            return
        message = (
            f"this token made more than {self.burst} requests at once or over "
            f"{self.rate:g} per second; retry in {retry_after} s"
        )
        response = json_response(
            error_body("Authorization", message), 429, {"Retry-After": str(retry_after)}
        )
        await response(scope, receive, send)
