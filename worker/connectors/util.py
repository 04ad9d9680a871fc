"""Small helpers every connector needs: cancellable waits and payload checks.

Connectors must react to the worker's cancel event while they wait on a service, so every
wait in a connector goes through `wait_cancelled` or `until_cancelled` instead of a plain
`asyncio.sleep` or a bare `await`. Payload errors are the submitter's fault and cannot be
fixed by another attempt, so `bad_payload` always builds a non-retryable `JobFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from worker.connectors.base import JobCancelled, JobFailed

T = TypeVar("T")


async def wait_cancelled(cancel: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `cancel`; True when it was set. Never sleeps when `seconds` <= 0.

    asyncio.wait rather than asyncio.timeout: on Python 3.11 a cancellation from outside that
    lands as an inner timeout expires can be turned into that TimeoutError and lost."""
    if cancel.is_set():
        return True
    if seconds <= 0:
        return False
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return cancel.is_set()


async def until_cancelled(awaitable: Awaitable[T], cancel: asyncio.Event) -> T:
    """Await `awaitable`; if `cancel` fires first, cancel it and raise JobCancelled.

    When both finish together the result wins: work that is already done is not thrown away.
    """
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    waiter: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
    finished = False
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if not finished:
        raise JobCancelled("job cancelled")
    return task.result()


def bad_payload(field: str, message: str) -> JobFailed:
    return JobFailed(f"payload.{field}: {message}", retryable=False, details={"field": field})


def payload_int(payload: Mapping[str, Any], field: str, default: int, *, lo: int, hi: int) -> int:
    value = payload.get(field, default)
    # bool is an int subclass; `"steps": true` is a mistake, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_payload(field, f"expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise bad_payload(field, f"must be between {lo} and {hi}, got {value}")
    return value


def payload_number(
    payload: Mapping[str, Any], field: str, default: float, *, lo: float, hi: float
) -> float:
    value = payload.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_payload(field, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not lo <= number <= hi:  # also rejects NaN
        raise bad_payload(field, f"must be between {lo:g} and {hi:g}, got {value}")
    return number


def payload_bool(payload: Mapping[str, Any], field: str, default: bool) -> bool:
    value = payload.get(field, default)
    if not isinstance(value, bool):
        raise bad_payload(field, f"expected true or false, got {type(value).__name__}")
    return value


def payload_mapping(payload: Mapping[str, Any], field: str) -> Mapping[str, Any] | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise bad_payload(field, f"expected an object, got {type(value).__name__}")
    return value


def shorten(text: str, limit: int = 500) -> str:
    """Service error bodies can be whole HTML pages; keep job errors readable."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
