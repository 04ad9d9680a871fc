"""Test helpers. Tests synchronise by polling a condition with a deadline, never by sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    from shared.redis_types import RedisClient

T = TypeVar("T")


def _describe(predicate: Callable[..., object], message: str | None) -> str:
    if message:
        return message
    return getattr(predicate, "__qualname__", None) or repr(predicate)


# The async predicate comes first: a coroutine function also matches ``Callable[[], T]``. The
# value returned is the predicate's first truthy one, so a ``None`` in its type never comes back.
@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    timeout: float = ...,
    interval: float = ...,
    message: str | None = ...,
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = ...,
    interval: float = ...,
    message: str | None = ...,
) -> T: ...


async def wait_until(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str | None = None,
) -> object:
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


async def redis_command(client: RedisClient, *args: str | bytes | int | float) -> object:
    """Send one command exactly as given: an ACL rule copied from a README, a command an ACL
    must refuse. redis-py leaves ``execute_command`` unannotated; this is its typed door."""
    send: Callable[..., Awaitable[object]] = client.execute_command
    return await send(*args)


async def stream_fields(redis: RedisClient, key: str) -> list[dict[bytes | str, bytes | str]]:
    """The fields of every entry of the stream ``key``, oldest first (XRANGE - +). redis-py
    types a reply and each entry's fields as optional; an XRANGE entry always has fields."""
    out: list[dict[bytes | str, bytes | str]] = []
    for entry_id, fields in await redis.xrange(key) or []:
        assert fields is not None, entry_id
        out.append(fields)
    return out
