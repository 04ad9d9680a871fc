"""The errors the hub's routes raise, and the shape every error answer has:
`{"error": {"field": ..., "message": ...}}`, `field` naming what was at fault ('' when
nothing in particular was).

Turning them into HTTP answers is hub/http_helpers.py's job (EXCEPTION_HANDLERS); this
module imports nothing from the hub, so any module may raise these.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer: HTTP status, the field at fault ('' when none) and a message."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{status} {field}: {message}")
        self.status = status
        self.field = field
        self.message = message


def not_found(what: str = "job") -> ApiError:
    return ApiError(404, "id", f"no such {what}")


def forbidden(message: str = "operator token required") -> ApiError:
    return ApiError(403, "Authorization", message)


def error_body(field: str, message: str) -> dict[str, Any]:
    return {"error": {"field": field, "message": message}}
