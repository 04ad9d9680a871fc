"""Structured logs: one JSON object per line, with the request id and job id attached.

The ids travel in context variables, so every line logged while serving a request (or while
handling one job) carries them without each call passing them along. Tokens and payload
bodies are never logged: the hub logs paths without query strings (browsers put `?token=`
there), and a last-resort filter masks anything that still looks like a credential.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "emp_request_id", default=None
)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("emp_job_id", default=None)

_SECRET_RE: Final = re.compile(
    r"(?i)(authorization:\s*(?:\w+\s+)?|bearer\s+|token=|password=)([^\s&\"',;]+)"
)
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)


def redact(text: str) -> str:
    """Mask bearer tokens, `token=` query values and passwords in free text."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Attach `job_id` to every log line in this block (and tasks started inside it)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def _safe(value: Any) -> str:
    """Fallback serialiser: libraries attach odd objects (weak proxies) to log records."""
    try:
        return redact(str(value))
    except Exception:
        return f"<{type(value).__name__}>"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id", "job_id", ...extras}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        job_id = job_id_var.get()
        if job_id:
            line["job_id"] = job_id
        for key, value in _extras(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=_safe).decode()


class TextFormatter(logging.Formatter):
    """Human-oriented lines for a terminal: `time level logger [req job] msg key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        ids = " ".join(
            f"{name}={value}"
            for name, value in (("req", request_id_var.get()), ("job", job_id_var.get()))
            if value
        )
        extras = " ".join(f"{k}={_safe(v)}" for k, v in _extras(record).items())
        parts = [stamp, f"{record.levelname:<7}", record.name]
        if ids:
            parts.append(f"[{ids}]")
        parts.append(redact(record.getMessage()))
        if extras:
            parts.append(redact(extras))
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    silence_frame_traces()


_REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
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
        if not _REQUEST_ID_RE.match(rid):
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
