"""The `chaos` fixture (see tests/chaos/support.py): a private Redis with AOF, restartable
on a fixed port, a fleet of hub and worker processes, proxies, and a direct Redis client to
observe it all. On failure the tail of every process log is printed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import Broker
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.chaos.support import (
    HEARTBEAT_INTERVAL,
    LEASE_TIMEOUT,
    REAPER_INTERVAL,
    Chaos,
    ChaosRedis,
    Fleet,
    SentinelChaos,
)
from tests.redis_servers import SentinelSet


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
