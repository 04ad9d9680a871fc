"""Who is calling: bearer tokens mapped to a role, checked before any route runs.

A pure ASGI middleware (not BaseHTTPMiddleware, which breaks streaming and contextvars) sees
HTTP and WebSocket alike. It stores the caller's `Principal` in `scope["auth"]`, so routes
read `request.auth` / `websocket.auth` and only decide what the role may do.

- `Authorization: Bearer <token>` everywhere; `?token=` only where a browser cannot send a
  header: WebSockets and the Server-Sent Events stream.
- Tokens are compared with `hmac.compare_digest` against every configured token, so the
  time taken says nothing about how much of a token matched or which one.
- Roles: `operator` may do everything; `client` submits and reads jobs, and a client token
  bound to a customer (`token:customer`) sees only that customer's jobs; one with
  `:max_priority=N` submits jobs whose effective priority never exceeds N.
- The legacy sockets (`/ws/client/...`, `/ws/monitor/...`) are let through without a valid
  token: the original protocol accepts the socket and then reports the failure in a
  message, which its clients expect; those endpoints check `websocket.auth` themselves.
  So are the original REST routes (`/api/...`), which answer 401 in the original's shape.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from hub.errors import error_body
from hub.http_helpers import json_response
from hub.settings import HubSettings
from shared.gateway_protocol import PATH as GATEWAY_PATH

Role = Literal["client", "operator"]

PUBLIC_PATHS = frozenset({"/", "/health", "/ready", "/openapi.json", "/docs", "/favicon.ico"})
PUBLIC_PREFIXES = ("/static/", "/ui/")
LEGACY_PREFIXES = ("/ws/client/", "/ws/monitor/")
# The original REST routes (hub/routes_legacy.py) take the legacy sockets' rules: `?token=`
# too, and a missing or wrong token answered by the route, in the original's error shape.
LEGACY_REST_PREFIX = "/api/"
# Gateway workers present gateway tokens, which are not client or operator tokens: the
# gateway endpoint checks them itself (against the grants in Redis), so no role applies.
GATEWAY_PATHS = frozenset({GATEWAY_PATH})


@dataclass(frozen=True, slots=True)
class Principal:
    """`max_priority`: the ceiling on the effective priority of the jobs this caller
    submits (a client token's `:max_priority=N`); None for none."""

    role: Role
    customer_id: str | None = None
    max_priority: int | None = None
    # The token's rate-limit bucket: its sha256, so the token itself never reaches Redis.
    bucket: str | None = field(default=None, compare=False, repr=False)

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def can_see(self, customer_id: str | None) -> bool:
        """Whether this caller may see a job of `customer_id`."""
        return self.operator or self.customer_id is None or self.customer_id == customer_id


OPEN = Principal("operator")


class Authenticator:
    """Maps a presented token to a Principal (None when it matches nothing)."""

    def __init__(self, settings: HubSettings) -> None:
        self.enabled = settings.auth_enabled
        self._operators = [t.encode() for t in settings.operator_tokens]
        self._clients = [
            (
                t.token.encode(),
                Principal("client", t.customer_id, t.max_priority, token_bucket(t.token)),
            )
            for t in settings.client_tokens
        ]

    def identify(self, token: str | None) -> Principal | None:
        if not self.enabled:
            return OPEN
        if not token:
            return None
        presented = token.encode()
        found: Principal | None = None
        # No early exit: every comparison runs whatever matched.
        for candidate in self._operators:
            if hmac.compare_digest(presented, candidate) and found is None:
                found = OPEN
        for candidate, principal in self._clients:
            if hmac.compare_digest(presented, candidate) and found is None:
                found = principal
        return found


def token_bucket(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def query_token(scope: Scope) -> str | None:
    raw: str = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(raw, keep_blank_values=True):
        if key == "token":
            return value or None
    return None


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _query_token_allowed(scope: Scope) -> bool:
    path: str = scope["path"]
    return (
        scope["type"] == "websocket"
        or path.endswith("/events")
        or path.startswith(LEGACY_REST_PREFIX)
    )


class AuthMiddleware:
    """Reject unauthenticated calls (401 / WebSocket close 1008) outside the public paths."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        token = bearer_token(scope)
        if token is None and _query_token_allowed(scope):
            token = query_token(scope)
        principal = self.auth.identify(token)
        scope["auth"] = principal
        if principal is not None or _is_public(path):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            if path.startswith(LEGACY_PREFIXES) or path in GATEWAY_PATHS:
                await self.app(scope, receive, send)
                return
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        if path.startswith(LEGACY_REST_PREFIX):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":  # CORS preflight carries no credentials
            await self.app(scope, receive, send)
            return
        message = "missing bearer token" if token is None else "invalid token"
        response = json_response(
            error_body("Authorization", message), 401, {"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)
