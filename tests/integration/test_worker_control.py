"""The worker's control channel (cancel signals over pub/sub) survives a connection that dies
silently: the listener pings a quiet channel, gives up on a link that does not answer, and
subscribes again on a fresh connection, so cancels keep arriving within seconds instead of
waiting for the heartbeat backstop. Redis is reached through a TCP proxy that can black-hole
the connections open at that moment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from shared.control_channel import ControlSubscription
from shared.redis_client import connect
from shared.redis_settings import RedisSettings
from tests.helpers import wait_until
from tests.tcp_proxy import PausableProxy
from worker.control import ControlListener

CHANNEL = "emp:test:control"


@pytest.fixture
async def proxy(redis_server_url: str) -> AsyncIterator[PausableProxy]:
    port = urlsplit(redis_server_url).port
    assert port is not None
    running = await PausableProxy(port).start()
    try:
        yield running
    finally:
        await running.close()


@contextlib.asynccontextmanager
async def listening(
    url: str, keepalive: float = 0.3
) -> AsyncIterator[tuple[ControlListener, list[str]]]:
    client = connect(RedisSettings(url=url), blocking=True)
    cancelled: list[str] = []
    listener = ControlListener(
        lambda: ControlSubscription(client, CHANNEL),
        cancelled.append,
        keepalive=keepalive,
        pong_deadline=keepalive,
    )
    task = asyncio.create_task(listener.run())
    try:
        await wait_until(lambda: listener.subscriptions >= 1, message="subscribed")
        yield listener, cancelled
    finally:
        task.cancel()
        # Cancelling must end the listener promptly, whatever it was waiting on.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await client.aclose()


async def delivered(redis: Redis, cancelled: list[str], job_id: str) -> None:
    """Publish until the listener has it: a publish racing a resubscription is lost (so a
    signal may also arrive twice; cancelling twice is harmless)."""

    async def arrived() -> bool:
        if job_id not in cancelled:
            await redis.publish(CHANNEL, f"cancel {job_id}")
        return job_id in cancelled

    await wait_until(arrived, timeout=10, interval=0.1, message=f"cancel {job_id} delivered")


async def test_a_cancel_signal_reaches_the_callback(proxy: PausableProxy, redis: Redis) -> None:
    async with listening(proxy.url, keepalive=5) as (_, cancelled):
        assert await redis.publish(CHANNEL, "cancel job-1") == 1
        await wait_until(lambda: cancelled == ["job-1"], message="job-1 cancelled")


async def test_a_quiet_healthy_channel_is_pinged_and_kept(
    proxy: PausableProxy, redis: Redis
) -> None:
    async with listening(proxy.url) as (listener, cancelled):
        await wait_until(lambda: listener.pings >= 3, message="three keepalive pings")
        assert listener.subscriptions == 1
        assert proxy.connections == 1
        await delivered(redis, cancelled, "job-2")


async def test_a_silently_dead_link_is_replaced_and_cancels_flow_again(
    proxy: PausableProxy, redis: Redis
) -> None:
    """Without the keepalive the listener would wait on the dead socket forever."""
    async with listening(proxy.url) as (listener, cancelled):
        await delivered(redis, cancelled, "before")
        proxy.blackhole()
        await wait_until(lambda: listener.subscriptions >= 2, message="resubscribed")
        assert proxy.connections >= 2
        await delivered(redis, cancelled, "after")
    assert list(dict.fromkeys(cancelled)) == ["before", "after"]


async def test_unknown_messages_are_ignored(proxy: PausableProxy, redis: Redis) -> None:
    async with listening(proxy.url, keepalive=5) as (_, cancelled):
        await redis.publish(CHANNEL, "reboot now")
        await redis.publish(CHANNEL, "cancel")
        await delivered(redis, cancelled, "job-3")
    assert set(cancelled) == {"job-3"}
