"""The connection classes behind every client `shared.redis_client.connect` makes.

Three behaviours are added to each of redis-py's connection kinds (TCP, TLS, unix socket, and
their Sentinel-managed twins), so that a client behaves the same however it reaches Redis:

- **hiredis packing.** redis-py's synchronous client encodes commands with hiredis's C packer
  when hiredis is installed, its asyncio client does not: it packs every argument in
  Python, about 40 us for a submit script's ~30 arguments against about 5 us in C (measured
  on the 2-core dev box).
- **A demoted primary means "reconnect".** After a failover the old primary, if it is still
  up, answers writes with READONLY, and unblocks a waiting BLPOP with UNBLOCKED. Both mean
  "this connection points at the wrong server", not "the command failed": the connection is
  dropped and a ConnectionError raised, which every caller already treats as "Redis is
  unreachable for now, retry" (a worker does not fail its job over it). The retry opens a
  fresh connection: Sentinel names the new primary, a managed Redis's DNS name points at it.
  redis-py's Sentinel connections do this themselves; plain ones do not. A Redis Cluster
  node does neither: a demoted one answers MOVED, and RedisCluster follows it, so the
  cluster classes add the packing and the in-place writes only.
- **Writes that cannot wait go without a timeout** (`_WritesInPlace`): redis-py's write
  timeout costs a Task per command on Python 3.11, and a write the buffer takes whole
  cannot time out.
- **Reads time out by a watch, not a timer each** (`_WatchedReads`): redis-py bounds every
  read by SOCKET_TIMEOUT with `asyncio.timeout`, a timer armed and cancelled per reply.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any

from hiredis import pack_command as hiredis_pack
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import DEMOTED_MASTER_UNBLOCKED_ERROR


class DemotedPrimary(RedisConnectionError):
    """The server this connection reached is no longer the primary (READONLY, UNBLOCKED)."""


class _Packed(AbstractConnection):
    """Commands encoded by hiredis. Arguments hiredis refuses (a bool, None, a bytearray) go
    through redis-py's packer, which raises or handles them as it always has."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (
            isinstance(first, bytes) and b" " in first
        ):
            # "CLIENT SETNAME" style names travel as separate words, as redis-py sends them.
            args = (*first.split(), *args[1:])
        try:
            return [hiredis_pack(args)]
        except TypeError:
            return super().pack_command(*args)


class _WritesInPlace(AbstractConnection):
    """A command that fits in the transport's buffer is written without redis-py's write
    timeout. redis-py bounds every write by SOCKET_TIMEOUT with `asyncio.wait_for`, which on
    Python 3.11 runs the write as a Task of its own (3.12's wait_for does not): about 12 us
    a command on the 2-core dev box, a fifth of a script call's client time. A write into a
    buffer below its high-water mark never waits (the transport takes it whole and
    `drain` returns at once), so that timeout can never fire there; a larger write, one
    queued behind unsent bytes, or one on a closed connection takes redis-py's path."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        if not self.socket_timeout or not self.is_connected:
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            # It may reconnect: the writer is read after it.
            await self.check_health()  # type: ignore[no-untyped-call]  # redis-py: untyped
        if isinstance(command, str):
            command = command.encode()
        chunks = [command] if isinstance(command, bytes) else list(command)
        writer = self._writer
        if (
            writer is None
            or writer.transport.is_closing()
            or writer.transport.get_write_buffer_size() + sum(map(len, chunks))
            > writer.transport.get_write_buffer_limits()[1]
        ):
            await super().send_packed_command(chunks, check_health=False)
            return
        try:
            writer.writelines(chunks)
        except OSError as exc:
            # As redis-py's path: the connection is closed, and the error is a lost one.
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket. {exc}.") from exc
        except BaseException:
            await self.disconnect(nowait=True)
            raise


# How often a connection's watch looks at its read in flight: every WATCH_SHARE of the
# socket timeout (so a read without a reply ends at most that much late), and at least
# every WATCH_PERIOD_MAX seconds.
WATCH_SHARE = 0.25
WATCH_PERIOD_MAX = 1.0


class _WatchedReads(AbstractConnection):
    """A reply that has not come within SOCKET_TIMEOUT ends the read with redis-py's own
    TimeoutError (the connection dropped, as redis-py does), as redis-py's per-read
    `asyncio.timeout` would, but the deadline is kept by one watch per connection instead
    of a timer armed and cancelled for every reply: that timer cost about 6 us a reply on
    uvloop (its `call_at` alone about 3 us) on the 2-core dev box, a twentieth of what a
    worker spends on a no-op job. The watch is a timer that comes back every quarter of
    the timeout (every second at most) while the connection keeps reading, and stops once
    it has not read since its last look; so a read that gets no reply ends at most that
    period after SOCKET_TIMEOUT. A disconnection ends the watch. Reads given a timeout of
    their own (pub/sub, blocking pops) take redis-py's path."""

    _read_deadline = 0.0  # loop time past which the read in flight has failed; 0: none
    _read_task: asyncio.Task[Any] | None = None
    _read_expired = False
    _read_since_look = False
    _watch: asyncio.TimerHandle | None = None

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool | float | None = True,  # redis-py's Sentinel types it float
        push_request: bool | None = False,
    ) -> Any:
        drop = bool(disconnect_on_error)
        limit = self.socket_timeout
        task = asyncio.current_task() if limit and timeout is None else None
        if task is None or limit is None:
            return await super().read_response(
                disable_decoding,
                timeout,
                disconnect_on_error=drop,
                push_request=push_request,
            )
        loop = asyncio.get_running_loop()
        self._read_deadline = loop.time() + limit
        self._read_task, self._read_expired, self._read_since_look = task, False, True
        if self._watch is None:
            self._watch = loop.call_later(self._watch_period(), self._look)
        cancelling = task.cancelling()
        try:
            # math.inf: redis-py reads without a timer of its own, and keeps the rest of its
            # handling (a connection dropped on any error, the health-check clock).
            return await super().read_response(
                disable_decoding,
                math.inf,
                disconnect_on_error=drop,
                push_request=push_request,
            )
        except asyncio.CancelledError:
            # Ours only when the watch cancelled the read and nobody else cancelled the task
            # meanwhile (what asyncio.timeout checks too). redis-py has dropped the
            # connection already (`drop`), as it does on any error while reading.
            if self._read_expired and task.uncancel() <= cancelling:
                raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None
            raise
        finally:
            self._read_deadline, self._read_task = 0.0, None

    async def disconnect(
        self,
        nowait: bool = False,
        error: Exception | None = None,
        failure_count: int | None = None,
        health_check_failed: bool = False,
    ) -> None:
        # The watch ends with the connection: its timer would otherwise hold the connection
        # (and what the connection holds) for up to two periods after a client closed.
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        await super().disconnect(nowait, error, failure_count, health_check_failed)

    def _watch_period(self) -> float:
        return min(WATCH_PERIOD_MAX, max(0.01, (self.socket_timeout or 1.0) * WATCH_SHARE))

    def _look(self) -> None:
        """The watch: end a read past its deadline; come back while reads go on."""
        self._watch = None
        task = self._read_task
        loop = asyncio.get_running_loop()
        if task is not None and loop.time() >= self._read_deadline:
            self._read_expired = True
            task.cancel()
        elif task is not None or self._read_since_look:
            self._read_since_look = False
            self._watch = loop.call_later(self._watch_period(), self._look)


class _FollowsThePrimary(AbstractConnection):
    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        try:
            return await super().read_response(
                disable_decoding,
                timeout,
                disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )
        except ReadOnlyError as exc:
            await self.disconnect()
            raise DemotedPrimary(f"the server is a replica now ({exc}); reconnecting") from exc
        except ResponseError as exc:
            if not str(exc).startswith(DEMOTED_MASTER_UNBLOCKED_ERROR):
                raise
            await self.disconnect()
            raise DemotedPrimary(f"the server is a replica now ({exc}); reconnecting") from exc


class HiredisPackedConnection(
    _Packed, _WritesInPlace, _WatchedReads, _FollowsThePrimary, Connection
):
    """TCP (redis://)."""


class PackedSSLConnection(
    _Packed, _WritesInPlace, _WatchedReads, _FollowsThePrimary, SSLConnection
):
    """TLS (rediss://)."""


class PackedUnixConnection(
    _Packed, _WritesInPlace, _WatchedReads, _FollowsThePrimary, UnixDomainSocketConnection
):
    """A unix socket (unix://)."""


class PackedSentinelConnection(_Packed, _WritesInPlace, _WatchedReads, SentinelManagedConnection):
    """TCP to whichever server Sentinel names (it handles READONLY itself)."""


class PackedSentinelSSLConnection(
    _Packed, _WritesInPlace, _WatchedReads, SentinelManagedSSLConnection
):
    """TLS to whichever server Sentinel names."""


class PackedClusterConnection(_Packed, _WritesInPlace, _WatchedReads, Connection):
    """TCP to one node of a Redis Cluster (a demoted node answers MOVED, which RedisCluster
    follows: no READONLY handling)."""


class PackedClusterSSLConnection(_Packed, _WritesInPlace, _WatchedReads, SSLConnection):
    """TLS to one node of a Redis Cluster."""
