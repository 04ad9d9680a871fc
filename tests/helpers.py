"""Test helpers. Tests synchronise by polling a condition with a deadline, never by sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _describe(predicate: Callable[..., object], message: str | None) -> str:
    if message:
        return message
    return getattr(predicate, "__qualname__", None) or repr(predicate)


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str | None = None,
) -> T:
    """Poll ``predicate`` (sync or async) until it returns a truthy value, and return that value.

    Raises ``AssertionError`` naming the condition and its last value after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {_describe(predicate, message)} "
                f"(last value: {value!r})"
            )
        await asyncio.sleep(min(interval, deadline - now))


def wait_until_sync(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str | None = None,
) -> T:
    """Blocking twin of :func:`wait_until` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {_describe(predicate, message)} "
                f"(last value: {value!r})"
            )
        time.sleep(min(interval, deadline - now))
