"""How the dashboard answers over HTTP: its JSON and error responses, the bearer-token check,
the Host check and the security headers on every answer.

Looking is open, naming and acting are not. Without a token the status shows counts,
progress, health and hardware, but no job or customer id (a job id is a handle on someone's
work, a customer id says who uses this box). Those, and cancelling a job or pausing the
worker, need `Authorization: Bearer <HUB_OPERATOR_TOKEN>`, the operator's token: a client
token, which any client of the hub holds, opens nothing here. With no token configured the
actions are refused (403) rather than left open to anyone who can reach the port.

Every answer also requires a Host header naming this dashboard (WORKER_DASHBOARD_HOSTS):
a page on another site that re-points its own name at 127.0.0.1 (DNS rebinding) would
otherwise read the status as same-origin.
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
NO_TOKEN_MESSAGE = "actions are disabled: HUB_OPERATOR_TOKEN must be set for this worker"


def security_headers(image_origins: tuple[str, ...] = ()) -> list[tuple[bytes, bytes]]:
    """The headers of every answer; `image_origins` (the output store's) may serve images."""
    img_src = " ".join(("'self'", "data:", *image_origins))
    csp = (
        f"default-src 'self'; img-src {img_src}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return [
        (b"content-security-policy", csp.encode("latin-1")),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]


SECURITY_HEADERS = security_headers()


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
        message = "missing token: send Authorization: Bearer <HUB_OPERATOR_TOKEN>"
        return error_response(401, TOKEN_FIELD, message, challenge)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        logger.warning("dashboard: action refused, wrong token (from %s)", client_host(request))
        return error_response(401, TOKEN_FIELD, "wrong token", challenge)
    return None


def presents_token(request: Request) -> bool:
    return bool(request.headers.get("authorization", "").strip())


def client_host(request: Request) -> str:
    return request.client.host if request.client else "?"


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which breaks contextvars): every answer
    forbids framing, sniffing and off-origin scripts."""

    def __init__(self, app: ASGIApp, image_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.headers = security_headers(image_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def allowed_hosts(configured: tuple[str, ...], bind_host: str) -> frozenset[str]:
    """The names the Host header may carry: WORKER_DASHBOARD_HOSTS, or by default the
    loopback names and the address the dashboard is bound to (a wildcard bind names no
    host: reaching the box by its address or name needs WORKER_DASHBOARD_HOSTS)."""
    if configured:
        return frozenset(h.lower().strip("[]") for h in configured)
    names = set(LOOPBACK_NAMES)
    if bind_host not in _WILDCARDS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def host_name(header: str) -> str:
    """The host of a Host header, without port or IPv6 brackets, lower-cased."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class AllowedHosts:
    """Pure ASGI middleware: answer 421 to any request whose Host is not one of `hosts`."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = host_name(value.decode("latin-1"))
                break
        if host not in self.hosts:
            logger.warning(
                "dashboard: refused a request for host %r (WORKER_DASHBOARD_HOSTS)", host
            )
            message = "this dashboard does not answer to that host name (WORKER_DASHBOARD_HOSTS)"
            await error_response(421, "Host", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)
