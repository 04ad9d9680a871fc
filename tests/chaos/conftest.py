"""The `chaos` fixture (see tests/chaos/support.py): a private Redis with AOF, restartable
on a fixed port, a fleet of hub and worker processes, proxies, and a direct Redis client to
observe it all. On failure the tail of every process log is printed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import Broker
from shared.redis_client import connect
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.chaos.support import (
    HEARTBEAT_INTERVAL,
    LEASE_TIMEOUT,
    REAPER_INTERVAL,
    Chaos,
    ChaosRedis,
    Fleet,
)


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
    redis = connect(RedisSettings(url=url))
    settings = BrokerSettings(
        lease_timeout=LEASE_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        reaper_interval=REAPER_INTERVAL,
    )
    fleet = Fleet(tmp_path, url)
    name = request.node.originalname.removeprefix("test_")
    env = Chaos(name, tmp_path, server, redis, Broker(redis, settings), fleet)
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
