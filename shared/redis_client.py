"""The one place that turns Redis settings into a client, for the hub, the worker, bench/.

`connect(settings)` understands every deployment `shared/redis_settings.py` describes: one
server (`redis://`, `unix://`), TLS (`rediss://` with a CA, an optional client certificate,
host name verification on by default), Sentinel (redis-py's own `redis.asyncio.sentinel`:
each new connection asks the sentinels for the current primary, so a failover needs no
restart) and Redis Cluster (redis-py's `RedisCluster`: it reads the slot map from the node
the URL names, follows MOVED and ASK redirects, and reads the map again after a failover).
Whatever the deployment, the client is configured to ride out network trouble: redis-py's
defaults (5 s socket timeout, no keepalive) suit neither side, a blocking BLPOP needs no read
timeout, and a worker on a flaky link wants keepalives, health checks and retries with
backoff instead of an exception at the first reset.

A component that needs a client of its own (a blocking one for BLPOP, XREAD or pub/sub, a
pool of a given size) asks `sibling(client, ...)`: the client remembers the settings it was
made from. Copying a client's connection kwargs instead does not work for a Sentinel pool,
whose connections are tied to the pool that made them.

The two kinds of client (`RedisClient`, shared/redis_types.py) offer the same commands, pub/sub
included; where they differ, a function here handles both: `drop_connections` (a cluster
client has a connection pool per node, not one).
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_connections import (
    HiredisPackedConnection,
    PackedClusterConnection,
    PackedClusterSSLConnection,
    PackedSentinelConnection,
    PackedSentinelSSLConnection,
    PackedSSLConnection,
    PackedUnixConnection,
)
from shared.redis_settings import RedisSettings
from shared.redis_types import RedisClient

__all__ = [
    "TRANSIENT_ERRORS",
    "Client",
    "ClusterClient",
    "RedisClient",
    "connect",
    "connect_server",
    "drop_connections",
    "sibling",
]

# What "Redis is unreachable right now" looks like to callers that want to wait it out.
# A demoted primary (shared.redis_connections.DemotedPrimary), "no primary known to the
# sentinels" (MasterNotFoundError) and a change not yet on enough replicas
# (shared.replication.NotReplicated) are ConnectionErrors too.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)

CONNECT_TIMEOUT = 5.0
SENTINEL_TIMEOUT = 2.0  # per sentinel asked: a dead one must not hold up the next
TOPOLOGY_REFRESH_MIN_INTERVAL = 0.1  # seconds between two reads of a cluster's slot map


class Client(Redis):
    """A Redis client that knows the settings it was made from, and closes the connections
    to its sentinels (redis-py leaves those to the caller) when it is closed."""

    made_from: RedisSettings
    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


class ClusterClient(RedisCluster):
    """A Redis Cluster client that knows the settings it was made from."""

    made_from: RedisSettings


def connect(
    settings: RedisSettings, *, blocking: bool = False, max_connections: int = 64
) -> RedisClient:
    """A client for commands (`blocking=False`: reads time out after
    REDIS_COMMAND_TIMEOUT_SECONDS, so a dead connection is noticed) or for blocking pops and
    pub/sub (`blocking=True`: no read timeout, the server holds the reply back on purpose).
    With REDIS_CLUSTER a `ClusterClient`, else a `Client`; `max_connections` is then per
    node."""
    common: dict[str, Any] = {
        "socket_timeout": None if blocking else settings.command_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if settings.cluster:
        return _cluster_client(settings, common, max_connections)
    if settings.sentinels:
        return _sentinel_client(settings, common, max_connections)
    assert settings.url is not None, "RedisSettings without a URL needs sentinels"
    options = _url_options(settings.url)
    options.update(common)
    if settings.tls:
        options.update(_tls_options(settings))
    pool = ConnectionPool(max_connections=max_connections, **options)
    client = cast(Client, Client.from_pool(pool))
    client.made_from = settings
    return client


def connect_server(
    settings: RedisSettings, *, blocking: bool = False, max_connections: int = 64
) -> Client:
    """`connect`, for settings that cannot name a cluster (tools and tests that use what
    only one server has: its one connection pool, its INFO), typed as such."""
    if settings.cluster:
        raise ValueError("connect_server: these settings name a Redis Cluster; use connect")
    client = connect(settings, blocking=blocking, max_connections=max_connections)
    assert isinstance(client, Client)
    return client


def sibling(
    client: RedisClient, *, blocking: bool = False, max_connections: int = 64
) -> RedisClient:
    """A new client to the same Redis as `client`, made from the same settings."""
    made_from = getattr(client, "made_from", None)
    if not isinstance(made_from, RedisSettings):
        raise TypeError(
            "this Redis client was not made by shared.redis_client.connect, so there are no "
            "settings to open another one from"
        )
    return connect(made_from, blocking=blocking, max_connections=max_connections)


def _url_options(url: str) -> dict[str, Any]:
    """What the URL says (host, port, path, db, user, password, query options), with the
    connection class swapped for ours of the same kind."""
    options: dict[str, Any] = dict(parse_url(url))
    kind = (
        PackedSSLConnection
        if url.startswith("rediss://")
        else PackedUnixConnection
        if url.startswith("unix://")
        else HiredisPackedConnection
    )
    options["connection_class"] = kind
    return options


def _tls_options(settings: RedisSettings) -> dict[str, Any]:
    def text(path: object) -> str | None:
        return None if path is None else str(path)

    return {
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": text(settings.tls_ca_file),
        "ssl_certfile": text(settings.tls_cert_file),
        "ssl_keyfile": text(settings.tls_key_file),
        "ssl_check_hostname": settings.tls_verify_hostname,
    }


def _sentinel_client(
    settings: RedisSettings, common: dict[str, Any], max_connections: int
) -> Client:
    """A client whose every new connection goes to the primary the sentinels name now."""
    data: dict[str, Any] = {}
    if settings.url is not None:
        data = _url_options(settings.url)
        for where in ("host", "port", "connection_class"):
            data.pop(where, None)  # the sentinels say where; the class is chosen below
    tls = _tls_options(settings) if settings.tls else {}
    to_sentinels: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "password": settings.sentinel_password,
    }
    if tls:
        to_sentinels.update(ssl=True, **tls)
    sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs=to_sentinels)
    assert settings.sentinel_master is not None
    client = cast(
        Client,
        sentinel.master_for(
            settings.sentinel_master,
            redis_class=Client,
            connection_class=PackedSentinelSSLConnection if tls else PackedSentinelConnection,
            max_connections=max_connections,
            **{**data, **common, **tls},
        ),
    )
    client.made_from = settings
    client.sentinels = sentinel
    return client


def _cluster_client(
    settings: RedisSettings, common: dict[str, Any], max_connections: int
) -> ClusterClient:
    """A Redis Cluster client seeded by the URL's node. Its retries (the same policy as a
    single server's) also cover CLUSTERDOWN and an uncovered slot, which a failover causes
    for a moment; MOVED and ASK are followed without counting as retries."""
    assert settings.url is not None, "RedisSettings.check requires a URL with REDIS_CLUSTER"
    options: dict[str, Any] = dict(parse_url(settings.url))
    options.pop("connection_class", None)  # chosen below
    tls = settings.tls
    options.pop("db", None)  # 0: RedisSettings.check refuses any other
    options.update(common)
    if tls:
        options.update(ssl=True, **_tls_options(settings))
    # After a connection error redis-py reads the slot map again, but by default at most
    # once a second: a failover right after the last read would cost every command made in
    # that second (three retries within a few hundred ms) an error.
    client = ClusterClient(
        max_connections=max_connections,
        topology_refresh_min_interval=TOPOLOGY_REFRESH_MIN_INTERVAL,
        **options,
    )
    # RedisCluster builds its node connections from one class of its own choosing; ours packs
    # commands with hiredis, as every other client's does (shared/redis_connections.py). A
    # demoted node answers MOVED in a cluster, which RedisCluster follows, so the
    # READONLY handling of the other classes is not needed here.
    packed = PackedClusterSSLConnection if tls else PackedClusterConnection
    client.connection_kwargs["connection_class"] = packed
    for node in client.startup_nodes:
        node.connection_class = packed
    client.made_from = settings
    return client


async def drop_connections(client: RedisClient) -> None:
    """Close every connection `client` holds (each reconnects when next used): for a
    connection that went silent. A cluster client holds connections per node."""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            await node.disconnect()
    else:
        await client.connection_pool.disconnect()
