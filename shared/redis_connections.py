"""The connection classes behind every client `shared.redis_client.connect` makes.

Two behaviours are added to each of redis-py's connection kinds (TCP, TLS, unix socket, and
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
  cluster classes add the packing only.
- **A send that cannot block costs no task.** redis-py bounds every send of a client with a
  socket timeout (every command client here: COMMAND_TIMEOUT) by `asyncio.wait_for`, which on
  Python 3.11 wraps the write in a task of its own: about 15 us and two more turns of the
  event loop before the command even leaves, on every command a worker or hub sends. A
  write the socket takes whole has nothing to wait for, so it goes out at once; only what
  the kernel did not take (a large command, a full socket buffer) takes redis-py's path,
  with its timeout and its error handling (the connection is dropped on any failure).
"""

from __future__ import annotations

import asyncio
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

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = self._writer
        if (
            self.socket_timeout
            and isinstance(command, list)
            and writer is not None
            and not writer.transport.is_closing()
            and not writer.transport.get_write_buffer_size()
            and not (check_health and self._health_check_due())
        ):
            # Straight into the socket, as StreamWriter.write does (it sends before it
            # buffers): with nothing left buffered, `drain` would return at once.
            writer.writelines(command)
            if not writer.transport.get_write_buffer_size() and not writer.transport.is_closing():
                return
            # What the socket did not take (or a connection lost in the write) is waited for,
            # and reported, as redis-py does: an empty write leaves just its drain.
            command, check_health = [], False
        await super().send_packed_command(command, check_health)

    def _health_check_due(self) -> bool:
        """redis-py's own test (Connection.check_health): a PING is due before this send."""
        interval = self.health_check_interval
        return bool(interval) and asyncio.get_running_loop().time() > self.next_health_check


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


class HiredisPackedConnection(_Packed, _FollowsThePrimary, Connection):
    """TCP (redis://)."""


class PackedSSLConnection(_Packed, _FollowsThePrimary, SSLConnection):
    """TLS (rediss://)."""


class PackedUnixConnection(_Packed, _FollowsThePrimary, UnixDomainSocketConnection):
    """A unix socket (unix://)."""


class PackedSentinelConnection(_Packed, SentinelManagedConnection):
    """TCP to whichever server Sentinel names (it handles READONLY itself)."""


class PackedSentinelSSLConnection(_Packed, SentinelManagedSSLConnection):
    """TLS to whichever server Sentinel names."""


class PackedClusterConnection(_Packed, Connection):
    """TCP to one node of a Redis Cluster (a demoted node answers MOVED, which RedisCluster
    follows: no READONLY handling)."""


class PackedClusterSSLConnection(_Packed, SSLConnection):
    """TLS to one node of a Redis Cluster."""
