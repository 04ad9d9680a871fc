"""The `chaos` fixture (see tests/chaos/support.py): a private Redis with AOF, restartable
on a fixed port, a fleet of hub and worker processes, proxies, and a direct Redis client to
observe it all. `sentinel_chaos` and `cluster_chaos` do the same on the session's Sentinel
set and on a private Redis Cluster. On failure the tail of every process log is printed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import Broker
from shared.redis_client import connect, connect_server
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.chaos.support import (
    HEARTBEAT_INTERVAL,
    LEASE_TIMEOUT,
    REAPER_INTERVAL,
    Chaos,
    ChaosRedis,
    ClusterChaos,
    Fleet,
    SentinelChaos,
)
from tests.redis_servers import SentinelSet, start_cluster

# Pools in a cluster_chaos fleet: one on each primary.
CLUSTER_POOLS = 3


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
async def chaos(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Chaos]:
    server = ChaosRedis(tmp_path / "redis")
    url = server.start()
    redis = connect_server(RedisSettings(url=url))
    settings = BrokerSettings(
        lease_timeout=LEASE_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        reaper_interval=REAPER_INTERVAL,
    )
    fleet = Fleet(tmp_path, url)
    name = request.node.originalname.removeprefix("test_")
    env = Chaos(
        scenario=name,
        root=tmp_path,
        redis=redis,
        broker=Broker(redis, settings),
        fleet=fleet,
        server=server,
    )
    try:
        yield env
    finally:
        for proxy in env.proxies:
            await proxy.close()
        fleet.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(fleet.tails())
        await redis.aclose()
        server.stop()


@pytest.fixture
async def sentinel_chaos(
    tmp_path: Path, request: pytest.FixtureRequest, sentinel_set: SentinelSet
) -> AsyncIterator[SentinelChaos]:
    redis = connect_server(sentinel_set.settings())
    settings = BrokerSettings(
        lease_timeout=LEASE_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        reaper_interval=REAPER_INTERVAL,
    )
    fleet = Fleet(tmp_path, "", sentinel_set.env())
    env = SentinelChaos(
        scenario=request.node.originalname.removeprefix("test_"),
        root=tmp_path,
        redis=redis,
        broker=Broker(redis, settings),
        fleet=fleet,
        servers=sentinel_set,
    )
    try:
        yield env
    finally:
        fleet.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(fleet.tails())
        await redis.aclose()


@pytest.fixture
async def cluster_chaos(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[ClusterChaos]:
    """A Redis Cluster of its own (three primaries, one replica each, under tmp_path), not
    the session's: the scenario kills a primary, and no other test should meet the cluster
    it leaves. Every process gets REDIS_CLUSTER=true, the URL of one node and POOLS, three
    pools on three different primaries."""
    servers = await asyncio.to_thread(start_cluster, tmp_path / "cluster", 3, 1)
    redis = connect(servers.settings())
    pools = list(servers.pools_on_distinct_primaries(CLUSTER_POOLS))
    settings = BrokerSettings(
        lease_timeout=LEASE_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        reaper_interval=REAPER_INTERVAL,
        pools=tuple(pools),
    )
    brokers = {pool: Broker(redis, settings, pool=pool) for pool in pools}
    fleet = Fleet(tmp_path, servers.seed().url, {"REDIS_CLUSTER": "true", "POOLS": ",".join(pools)})
    env = ClusterChaos(
        scenario=request.node.originalname.removeprefix("test_"),
        root=tmp_path,
        redis=redis,
        broker=brokers[pools[0]],
        fleet=fleet,
        servers=servers,
        brokers=brokers,
    )
    try:
        yield env
    finally:
        fleet.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(fleet.tails())
        await redis.aclose()
        servers.stop()
