"""What the hub logs about the traffic it serves, and how uvicorn's own loggers join in.

Every request gets an id (X-Request-ID in, or a new one), echoed in the response and carried
by every line logged while serving it; one access line per request records method, path
WITHOUT the query string (browsers put `?token=` there), status and duration. The formatters,
the id context variables and secret masking are shared with the worker (shared/logs.py).

Named request_log, not logging, so that nothing here can shadow the standard library's module.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any, Final

from shared.logs import job_id_var, request_id_var, setup_logging

_FRAME_TRACE: Final = re.compile(r"^[<>] (TEXT|BINARY|PING|PONG|CLOSE|CONT)\b")


class _NoFrameTraces(logging.Filter):
    """The websockets library, run by uvicorn, traces every frame at DEBUG on uvicorn.error,
    payloads included; job payloads and results must never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and _FRAME_TRACE.match(record.getMessage()))


_frame_filter = _NoFrameTraces()


def silence_frame_traces() -> None:
    """Idempotent; called by create_app so embedded hubs are covered too."""
    error_log = logging.getLogger("uvicorn.error")
    if _frame_filter not in error_log.filters:
        error_log.addFilter(_frame_filter)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format.

    uvicorn's own access log is switched off by the CLI: it would log `?token=` query
    strings. The hub's request middleware logs requests instead.
    """
    setup_logging(level, fmt, layout="compact")  # the hub's text lines, as they always were
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    silence_frame_traces()


_REQUEST_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_log = logging.getLogger("hub.access")


class RequestContextMiddleware:
    """Give every request an id (X-Request-ID in, or a new one), echo it in the response,
    and log one access line per request: method, path WITHOUT the query string (browsers
    put `?token=` there), status and duration, plus the job id the route bound, if any."""

    def __init__(self, app: Any, *, access: bool = True) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not _REQUEST_ID_RE.fullmatch(rid):
            rid = uuid.uuid4().hex[:16]
        rid_token = request_id_var.set(rid)
        job_token = job_id_var.set(None)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    scope.get("method", "WS"),
                    scope["path"],
                    status or "-",
                    extra={
                        "request_id": rid,
                        "job_id": job_id_var.get(),
                        "method": scope.get("method", "WS"),
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            job_id_var.reset(job_token)
            request_id_var.reset(rid_token)
