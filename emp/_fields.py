"""Reading the hub's JSON into typed values, tolerantly.

A newer hub may add fields and an older one may lack some: a missing field takes its
default and an unknown one is ignored (it stays reachable through each model's `raw`).
Only a value of the wrong type is an error, a ProtocolError naming the field, because
guessing there would hand the caller wrong data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emp.errors import ProtocolError


def as_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


class Fields:
    """Typed access to one JSON object; `what` names it in errors ("job", "worker")."""

    def __init__(self, raw: Any, what: str) -> None:
        self.raw = as_object(raw, what)
        self.what = what

    def _bad(self, key: str, expected: str) -> ProtocolError:
        got = type(self.raw.get(key)).__name__
        return ProtocolError(f"{self.what}.{key}: expected {expected}, got {got}")

    def text(self, key: str, default: str = "") -> str:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self._bad(key, "a string")

    def opt_integer(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def integer(self, key: str, default: int = 0) -> int:
        value = self.opt_integer(key)
        return default if value is None else value

    def opt_number(self, key: str) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(key, "a number")
        return float(value)

    def number(self, key: str, default: float = 0.0) -> float:
        value = self.opt_number(key)
        return default if value is None else value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def time(self, key: str) -> datetime | None:
        """An ISO-8601 timestamp ("2026-01-01T12:00:00.000Z"), as an aware datetime."""
        text = self.opt_text(key)
        if text is None:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise self._bad(key, "an ISO-8601 time") from None

    def texts(self, key: str) -> list[str]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return list(value)

    def obj(self, key: str) -> Mapping[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._bad(key, "an object")
        return value

    def items(self, key: str) -> list[Any]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._bad(key, "a list")
        return value
