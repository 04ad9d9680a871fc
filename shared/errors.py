"""Errors shared by hub and worker.

Every error a client can cause names the offending field, so the hub can turn it into
`{"error": {"field": ..., "message": ...}}` without guessing.
"""

from __future__ import annotations

import re

import msgspec

_PATH_RE = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


class EmpError(Exception):
    """Base class for errors raised by emp-redis code."""


class InvalidInput(EmpError):
    """Input failed validation. `field` is a dotted path (`requirements.hardware.gpu.count`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    @classmethod
    def from_msgspec(cls, exc: msgspec.ValidationError, root: str = "") -> InvalidInput:
        """Translate msgspec's "... - at `$.a.b[0]`" into a field path and a message."""
        text = str(exc)
        match = _PATH_RE.search(text)
        path = match.group("path") if match else ""
        message = text[: match.start()] if match else text
        unknown = re.match(r"Object contains unknown field `(?P<name>[^`]+)`", message)
        if unknown:
            # Name the unknown field itself: that is what the user mistyped.
            path = f"{path}.{unknown.group('name')}" if path else unknown.group("name")
            message = "unknown field"
        missing = re.match(r"Object missing required field `(?P<name>[^`]+)`", message)
        if missing:
            path = f"{path}.{missing.group('name')}" if path else missing.group("name")
            message = "required field missing"
        field = ".".join(p for p in (root, path) if p)
        return cls(field, message)


class PayloadTooLarge(InvalidInput):
    """A document is over its configured size limit (the hub answers 413)."""


class BrokerError(EmpError):
    """Redis answered something the broker did not expect."""
