"""Logging for hub and worker alike: text for people, JSON lines for machines, secrets masked.

Job and request ids travel in context variables, so every line logged while handling a job (or
serving a request) carries its id without threading it through every call. There is one of
each: the worker's job runner and the hub's routes set the same `job_id_var`.

Payloads and tokens are never passed to the logger in the first place; as the last line of
defence every formatted line goes through `shared.redaction.redact` (bearer tokens, `token=` and
`password=` values, credentials in URLs such as a Redis URL quoted by a connection error), in
the worker as in the hub. What only the hub needs (its access log, uvicorn's loggers) is in
hub/request_log.py.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from shared.redaction import redact

job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("emp_job_id", default=None)
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "emp_request_id", default=None
)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of msg
)

TextLayout = Literal["compact", "dated"]
_DATED_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


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
    """Lines for a terminal, masked, in the layout each process has always written:

    - "compact" (the hub): `12:00:00 INFO    hub.access [req=r1 job=j1] GET /jobs 200 ...`,
      the time of day, the ids before the message and `extra=` fields after it;
    - "dated" (the worker): `2025-06-01 12:00:00,123 INFO    worker.job_runner: job completed
      after 1.2 s [job_id=j1]`, the date and milliseconds first and the ids last: operators
      grep a worker's log for `job_id=`, and tests/chaos read times and ids from these lines.
    """

    def __init__(self, layout: TextLayout = "compact") -> None:
        super().__init__(_DATED_FORMAT if layout == "dated" else None)
        self.layout = layout

    def format(self, record: logging.LogRecord) -> str:
        return self._dated(record) if self.layout == "dated" else self._compact(record)

    def _compact(self, record: logging.LogRecord) -> str:
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

    def _dated(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))  # the message and any traceback
        ids = [
            f"{name}={value}"
            for name, value in (
                ("job_id", getattr(record, "job_id", None) or job_id_var.get()),
                ("request_id", getattr(record, "request_id", None) or request_id_var.get()),
            )
            if value
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def setup_logging(level: str, fmt: str, *, layout: TextLayout) -> None:
    """Send every log line to stderr: JSON lines when `fmt` is "json", else text in `layout`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(layout))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
