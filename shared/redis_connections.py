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
"""

from __future__ import annotations

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
