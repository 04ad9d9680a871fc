"""A consumer group on the `events` stream: entries shared out among the hubs, each handed to
one of them, and handed to another when the one holding it stops answering.

Hubs read with XREADGROUP (each entry goes to one consumer and stays in the group's pending
list until acknowledged), acknowledge with XACK once an entry is dealt with, and take over
entries another consumer has held for too long with XAUTOCLAIM: a hub that died mid-way
leaves its entries to the others. The blocking read runs on a connection of its own with a
deadline, exactly as the plain tail does (shared/event_stream.py, whose connection this
reuses). Nothing here knows what the entries are for; hub/webhooks/ does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.event_stream import READ_MARGIN, Entry, EventStream, _finish
from shared.redis_client import drop_connections
from shared.redis_types import RedisClient
from shared.text import as_text


class EventGroup(EventStream):
    """Consumer `consumer` of group `group` on stream `key`. `open()` before reading."""

    def __init__(self, redis: RedisClient, key: str, group: str, consumer: str) -> None:
        super().__init__(redis, key)
        self.group = group
        self.consumer = consumer

    async def ensure(self) -> None:
        """Create the group at the stream's end unless it exists: entries written before the
        first hub joined are history, not work."""
        try:
            await self._redis.xgroup_create(self._key, self.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, *, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` entries no consumer of the group has had yet, waiting up to
        `block_ms` for the first; they stay pending for this consumer until `ack`. The read
        has a deadline past its block time, as EventStream.read's has. A group that
        vanished (Redis lost its data) is created again."""
        assert self._reader is not None, "open() the group first"
        read = asyncio.ensure_future(
            self._reader.xreadgroup(
                self.group, self.consumer, {self._key: ">"}, count=count, block=block_ms
            )
        )
        try:
            done, _ = await asyncio.wait({read}, timeout=block_ms / 1000 + READ_MARGIN)
        except asyncio.CancelledError:
            await _finish(read)
            raise
        if not done:
            await _finish(read)
            await drop_connections(self._reader)
            raise RedisTimeoutError("no answer to XREADGROUP past its block time")
        try:
            raw: Any = read.result() or []
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure()
            return []
        streams = raw.values() if isinstance(raw, dict) else (entries for _, entries in raw)
        return [_entry(entry_id, fields) for entries in streams for entry_id, fields in entries]

    async def claim_idle(
        self, *, min_idle_ms: int, count: int, start: str = "0-0"
    ) -> tuple[list[Entry], str, int]:
        """Take over up to `count` entries pending for longer than `min_idle_ms` (for any
        consumer, this one included). Returns them, the id to continue from ("0-0": the
        pending list was scanned to its end) and how many pending entries had already been
        trimmed from the stream (they are dropped from the pending list: lost)."""
        reply = await self._redis.xautoclaim(
            self._key, self.group, self.consumer, min_idle_ms, start_id=start, count=count
        )
        entries = [_entry(i, f) for i, f in reply[1] if f is not None]
        deleted = len(reply[2]) if len(reply) > 2 else 0
        return entries, as_text(reply[0]), deleted

    async def ack(self, entry_ids: list[str]) -> int:
        if not entry_ids:
            return 0
        return int(await self._redis.xack(self._key, self.group, *entry_ids))

    async def pending_count(self) -> int:
        """Entries handed to a consumer and not yet acknowledged, in the whole group."""
        summary = await self._redis.xpending(self._key, self.group)
        return int(summary["pending"])

    async def consumers(self) -> dict[str, int]:
        """Each consumer of the group and how many entries it holds unacknowledged."""
        infos = await self._redis.xinfo_consumers(self._key, self.group)
        return {as_text(info["name"]): int(info["pending"]) for info in infos}

    async def prune_consumers(self, idle_ms: int) -> int:
        """Forget consumers holding nothing that were last seen `idle_ms` ago: each hub
        process joins under a name of its own, and restarts would otherwise pile them up.
        A live hub that is merely quiet and gets pruned is re-created by its next read."""
        removed = 0
        for info in await self._redis.xinfo_consumers(self._key, self.group):
            name = as_text(info["name"])
            if int(info["pending"]) == 0 and int(info["idle"]) >= idle_ms:
                await self._redis.xgroup_delconsumer(self._key, self.group, name)
                removed += 1
        return removed


def _entry(entry_id: Any, fields: Any) -> Entry:
    return as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}
