"""How the dashboard answers over HTTP: its JSON and error responses, the bearer-token check
that guards its actions, and the security headers on every answer.

Reading is open, acting is not. The dashboard listens on 127.0.0.1 by default and
`GET /api/status` carries nothing secret (no claim tokens, no HUB_AUTH_TOKEN, no passwords in
URLs), so an operator can look without credentials. Cancelling a job or pausing the worker
changes what a GPU box does, so those need `Authorization: Bearer <HUB_AUTH_TOKEN>`; with no
token configured they are refused (403) rather than left open to anyone who can reach the port.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The routes' logger, so a refused action and the actions that succeed are logged under the
# one name operators already filter on.
logger = logging.getLogger("worker.dashboard_api")

TOKEN_FIELD = "Authorization"
NO_TOKEN_MESSAGE = "actions are disabled: HUB_AUTH_TOKEN must be set for this worker"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    merged = {"cache-control": "no-store", **(headers or {})}
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=merged
    )


def error_response(
    status: int, field: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The project-wide error shape: `{"error": {"field": ..., "message": ...}}`."""
    return json_response({"error": {"field": field, "message": message}}, status, headers)


def check_token(request: Request, expected: str | None) -> Response | None:
    """None when the request carries the right bearer token, else the error to answer.

    `hmac.compare_digest` keeps the comparison time independent of how much matched.
    """
    if not expected:
        return error_response(403, TOKEN_FIELD, NO_TOKEN_MESSAGE)
    challenge = {"www-authenticate": 'Bearer realm="emp-worker"'}
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        message = "missing token: send Authorization: Bearer <HUB_AUTH_TOKEN>"
        return error_response(401, TOKEN_FIELD, message, challenge)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        logger.warning("dashboard: action refused, wrong token (from %s)", client_host(request))
        return error_response(401, TOKEN_FIELD, "wrong token", challenge)
    return None


def client_host(request: Request) -> str:
    return request.client.host if request.client else "?"


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which breaks contextvars): every answer
    forbids framing, sniffing and off-origin scripts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
