"""Root fixtures: every test that asks for Redis gets a real, private, empty server.

- ``redis_server_url`` (session): ``EMP_TEST_REDIS_URL`` when set (never port 6379 unless
  ``EMP_TEST_ALLOW_6379=1``; one test process only), else one :class:`EmbeddedRedis` on a free
  port for the whole run of each test process.
- ``redis_url`` (function): the same URL, after ``FLUSHALL``, so tests are isolated.
- ``redis`` (async, function): a client on ``redis_url`` from ``shared.redis_client.connect``.

Other deployments (Sentinel, replication, TLS, a managed-like server, a Redis Cluster) are
started once per session, when a test first asks for them (tests/redis_servers.py). The
cluster is not emptied between tests: each takes a hash tag of its own (``cluster_prefix``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis as AsyncRedis

from shared.broker import Broker
from shared.embedded_redis import EmbeddedRedis
from shared.redis_client import connect, connect_server
from shared.redis_settings import RedisSettings
from shared.redis_types import RedisClient
from shared.settings import BrokerSettings
from tests.redis_servers import (
    Cluster,
    NoTls,
    Replicated,
    SentinelSet,
    Server,
    TlsCluster,
    TlsSentinel,
    TlsServer,
    start_cluster,
    start_managed_like,
    start_replicated,
    start_sentinel_set,
    start_tls_cluster,
    start_tls_sentinel,
    start_tls_server,
)

DEFAULT_REDIS_PORT = 6379


def _check_external_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    try:
        port = parts.port or DEFAULT_REDIS_PORT
    except ValueError:
        pytest.exit("EMP_TEST_REDIS_URL is not a valid URL", returncode=pytest.ExitCode.USAGE_ERROR)
    if port == DEFAULT_REDIS_PORT and os.environ.get("EMP_TEST_ALLOW_6379") != "1":
        pytest.exit(
            "EMP_TEST_REDIS_URL points at port 6379, which may be a real Redis: the tests run "
            "FLUSHALL. Use another port, or set EMP_TEST_ALLOW_6379=1 if you really mean it.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_configure(config: pytest.Config) -> None:
    # Every test empties the server it is given: test processes sharing one external server
    # (python3 dev.py test runs two) would empty each other's.
    processes = getattr(config.option, "numprocesses", None)
    if os.environ.get("EMP_TEST_REDIS_URL", "").strip() and processes:
        pytest.exit(
            "EMP_TEST_REDIS_URL is one server, and every test FLUSHALLs it: run the tests in "
            "one process (EMP_TEST_PROCESSES=0 python3 dev.py test, or pytest -n 0)",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("EMP_TEST_REDIS_URL", "").strip()
    if external:
        _check_external_url(external)
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-server"), appendonly=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    with SyncRedis.from_url(redis_server_url, socket_timeout=10, socket_connect_timeout=5) as sync:
        sync.flushall()
    return redis_server_url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AsyncRedis]:
    # Made as the hub and the worker make theirs, so what needs a client of its own (the
    # event stream's reader) can open one from it; no read timeout, as tests block on purpose.
    client = connect_server(RedisSettings(url=redis_url), blocking=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def broker_settings() -> BrokerSettings:
    """Fast timings so lease, backoff and timeout behaviour is observable in tests; strict
    claim order (no scheduling policy, though all are on by default), which the tests of
    ordering rely on; the scheduling tests turn the policies they test on."""
    return BrokerSettings(
        scheduling_policies=(),
        lease_timeout=2.0,
        heartbeat_interval=0.5,
        reaper_interval=0.2,
        retry_backoff_base=0.05,
        retry_backoff_cap=0.2,
        avoid_window=0.5,
        orphan_grace=1.0,
        idle_poll=1.0,
    )


@pytest.fixture
def broker(redis: AsyncRedis, broker_settings: BrokerSettings) -> Broker:
    return Broker(redis, broker_settings)


# -- deployments: Sentinel, replication, TLS, a managed-like server (tests/redis_servers.py) --
# Each is started once per session, when a test first asks for it: they cost seconds.


@pytest.fixture(scope="session")
def sentinel_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """One primary, two replicas, three sentinels (down-after 1000 ms)."""
    servers = start_sentinel_set(tmp_path_factory.mktemp("sentinel"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def sentinel_set(sentinel_servers: SentinelSet) -> Iterator[SentinelSet]:
    """The session's Sentinel set, healthy and empty; a node a test killed is back, as a
    replica, afterwards."""
    sentinel_servers.restore()
    with sentinel_servers.primary().client() as client:
        client.flushall()
    yield sentinel_servers
    sentinel_servers.restore()


@pytest.fixture(scope="session")
def replicated_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """One primary, one replica, no Sentinel: for REDIS_WAIT_REPLICAS."""
    servers = start_replicated(tmp_path_factory.mktemp("replicated"), replicas=1)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def replicated(replicated_servers: Replicated) -> Replicated:
    replicated_servers.wait_in_sync()
    with replicated_servers.primary.client() as client:
        client.flushall()
    return replicated_servers


@pytest.fixture(scope="session")
def tls_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    try:
        servers = start_tls_server(tmp_path_factory.mktemp("tls"))
    except NoTls as exc:
        pytest.skip(f"TLS tests skipped: {exc}")
    try:
        yield servers
    finally:
        servers.server.stop()


@pytest.fixture
def tls_server(tls_servers: TlsServer) -> TlsServer:
    with tls_servers.server.client() as client:
        client.flushall()
    return tls_servers


@pytest.fixture(scope="session")
def tls_sentinel_servers(
    tmp_path_factory: pytest.TempPathFactory, tls_servers: TlsServer
) -> Iterator[TlsSentinel]:
    """A sentinel over TLS watching the TLS server: Sentinel with rediss://."""
    sentinel = start_tls_sentinel(tmp_path_factory.mktemp("tls-sentinel"), tls_servers)
    try:
        yield sentinel
    finally:
        sentinel.sentinel.stop()


@pytest.fixture
def tls_sentinel(tls_sentinel_servers: TlsSentinel, tls_server: TlsServer) -> TlsSentinel:
    return tls_sentinel_servers  # tls_server emptied the data node


@pytest.fixture(scope="session")
def managed_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_managed_like(tmp_path_factory.mktemp("managed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def managed_redis(managed_servers: Server) -> Server:
    """A server without CONFIG, DEBUG, KEYS, SCAN, MONITOR and MODULE, emptied."""
    with managed_servers.client() as client:
        client.flushall()
    return managed_servers


# -- Redis Cluster: three primaries, one replica each, shared by the whole session ---------


@pytest.fixture(scope="session")
def cluster_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three primaries sharing the slots evenly, one replica each: started once (about 2 s)."""
    servers = start_cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas_per_primary=1)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_cluster(cluster_servers: Cluster) -> Iterator[Cluster]:
    """The session's cluster with every node up and the slot map agreed, before and after
    the test (a node the test killed is back, as a replica). Never emptied: tests keep
    apart by their own hash tag (`cluster_prefix`). Slots a test moved stay moved."""
    cluster_servers.restore()
    yield cluster_servers
    cluster_servers.restore()


@pytest.fixture
def cluster_prefix() -> str:
    """A REDIS_KEY_PREFIX no other test uses, with a hash tag: it comes first in every key,
    so every pool the test makes shares that one slot, of its own."""
    return f"{{t-{uuid.uuid4().hex[:12]}}}:"


@pytest.fixture
async def cluster_redis(redis_cluster: Cluster) -> AsyncIterator[RedisClient]:
    """A cluster client made as the hub's and worker's are (REDIS_CLUSTER=true), without a
    read timeout, as the `redis` fixture."""
    client = connect(redis_cluster.settings(), blocking=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_servers: TlsServer
) -> Iterator[TlsCluster]:
    """Three primaries, one replica each, over TLS (clients, bus, replication), with the TLS
    server's certificates; like `cluster_servers`, never emptied."""
    servers = start_tls_cluster(tmp_path_factory.mktemp("tls-cluster"), tls_servers)
    try:
        yield servers
    finally:
        servers.stop()
