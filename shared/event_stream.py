"""Tailing the `events` stream: the newest entry id, and XREAD BLOCK on a connection of its own.

Every Lua script XADDs the events it causes, so this stream is the ordered history of the
fleet. The hub's fan-out (hub/events.py) decides what to do with the entries and when to retry;
this module owns the Redis side: which key, which connection, and how a read that the server
never answers (a connection that died without a reset: NAT, failover) is detected.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_client import drop_connections, sibling
from shared.redis_types import RedisClient
from shared.text import as_text

# Seconds past XREAD's block time after which the reader's connection counts as dead.
READ_MARGIN = 5.0

Entry = tuple[str, dict[str, str]]  # (stream entry id, its fields)


class EventStream:
    """One tail of the stream. `open()` before `read()`, `close()` when done."""

    def __init__(self, redis: RedisClient, key: str) -> None:
        self._redis = redis
        self._key = key
        self._reader: RedisClient | None = None

    async def newest_id(self) -> str:
        """The id of the newest entry ("0-0" for an empty stream): read after it to get
        live events only."""
        newest = await self._redis.xrevrange(self._key, count=1)
        return as_text(newest[0][0]) if newest else "0-0"

    def open(self) -> None:
        # The blocking XREAD gets a connection of its own without a read timeout: the server
        # holds the reply back on purpose, and wrapping that read in a socket timeout made
        # cancelling it at shutdown unreliable on Python 3.11 (nested asyncio timeouts).
        self._reader = sibling(self._redis, blocking=True, max_connections=1)

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()
            self._reader = None

    async def read(self, after: str, *, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` entries after id `after`, waiting up to `block_ms` for the first;
        [] when none came. The read has a deadline of its own: the server answers by the
        end of its block time, so silence past that raises RedisTimeoutError. The read runs
        as a task and is abandoned, not cancelled from inside a timeout, and the connection
        is dropped so the next read opens a fresh one."""
        assert self._reader is not None, "open() the stream first"
        read = asyncio.ensure_future(
            self._reader.xread({self._key: after}, count=count, block=block_ms)
        )
        try:
            done, _ = await asyncio.wait({read}, timeout=block_ms / 1000 + READ_MARGIN)
        except asyncio.CancelledError:
            await _finish(read)  # let it hand its connection back before the pool closes
            raise
        if not done:
            await _finish(read)
            await drop_connections(self._reader)
            raise RedisTimeoutError("no answer to XREAD past its block time")
        raw: Any = read.result() or []
        # RESP3 answers a dict of streams, RESP2 a list of [stream, entries] pairs.
        streams = raw.values() if isinstance(raw, dict) else (entries for _, entries in raw)
        return [
            (as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()})
            for entries in streams
            for entry_id, fields in entries
        ]


async def _finish(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait for it to unwind, so nothing it raises goes unretrieved."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
