"""Managed Redis services forbid commands (CONFIG, DEBUG, KEYS, SCAN, MONITOR, modules) and
give each client an ACL user. Against a server where those commands do not exist, the hub
(REST, fleet, stats, metrics, maintenance), a real worker and the worker's ACL user from
release/README.md all do their normal work."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from hub.maintenance import Maintenance
from shared.broker import Broker
from shared.redis_client import connect, connect_server
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.helpers import redis_command
from tests.hub_support import CLIENT, OPERATOR, hub_client, hub_settings
from tests.integration.test_worker_acl import PASSWORD, readme_acl, run_everything_a_worker_does
from tests.redis_servers import FORBIDDEN_COMMANDS, Server
from tests.worker_support import running_worker, worker_settings


@pytest.fixture
async def admin(managed_redis: Server) -> AsyncIterator[Redis]:
    client = connect_server(RedisSettings(url=managed_redis.url))
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("command", FORBIDDEN_COMMANDS)
async def test_the_server_really_lacks_the_forbidden_commands(admin: Redis, command: str) -> None:
    with pytest.raises(ResponseError, match="unknown command"):
        await redis_command(admin, command, "HELP")


async def test_hub_and_worker_do_their_normal_work(
    managed_redis: Server, admin: Redis, broker_settings: BrokerSettings
) -> None:
    settings = hub_settings(managed_redis.url, broker=broker_settings)
    worker = worker_settings(managed_redis.url, "managed-w")
    async with running_worker(worker), hub_client(settings) as http:
        ids = []
        for _ in range(3):
            created = await http.post(
                "/jobs",
                headers=CLIENT,
                json={"service_type": "simulation", "payload": {"steps": 2, "step_ms": 1}},
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        for job_id in ids:
            done = await http.get(f"/jobs/{job_id}", params={"wait": 20}, headers=CLIENT)
            assert done.json()["status"] == "completed", done.text
        for path in ("/jobs?status=completed", "/workers", "/stats", "/metrics", "/ready"):
            answer = await http.get(path, headers=OPERATOR)
            assert answer.status_code == 200, (path, answer.text)
        hub = http.hub_app.state.hub  # type: ignore[attr-defined]
        aging = dataclasses.replace(settings, maintenance=True)
        report = await Maintenance(hub.broker, aging).tick(force=True)
        assert "reaped" in report
        assert "cleanup" in report


async def test_the_worker_acl_user_is_enough(
    admin: Redis, managed_redis: Server, broker_settings: BrokerSettings
) -> None:
    await redis_command(admin, "ACL", *readme_acl())
    worker = connect(
        RedisSettings(url=f"redis://emp-worker:{PASSWORD}@127.0.0.1:{managed_redis.port}/0")
    )
    try:
        await run_everything_a_worker_does(
            Broker(worker, broker_settings), Broker(admin, broker_settings)
        )
    finally:
        await worker.aclose()
        await redis_command(admin, "ACL", "DELUSER", "emp-worker")
