"""The broker's Redis client packs commands with hiredis and must say exactly what redis-py's
own packer says: same bytes, same refusals, and real commands (scripts, pipelines,
multi-word names) still work against a real server. A command client writes what fits its
buffer without redis-py's write timeout: large writes still get it, and a server that stops
answering is still noticed. Its reads are bounded by a watch per connection instead of a
timer per reply: a silent server still ends the read with redis-py's TimeoutError and the
connection, a cancellation from elsewhere stays a cancellation, and the watch stops once
the connection stops reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_client import connect_server
from shared.redis_connections import HiredisPackedConnection
from shared.redis_settings import RedisSettings
from tests.helpers import wait_until
from tests.redis_servers import Server

ARGS: list[tuple[Any, ...]] = [
    ("SET", "k", "v"),
    ("EVALSHA", "abc", 1, "key", 1.5, 10**20, 1e-7, 0.1 + 0.2, -3, b"\x00\xff", "é"),
    ("CLIENT SETNAME", "emp"),
    (b"CONFIG GET", b"maxmemory"),
    ("SET", "big", "x" * 100_000),
]


@pytest.mark.parametrize("args", ARGS, ids=lambda a: str(a[0]))
def test_hiredis_packing_matches_redis_py_byte_for_byte(args: tuple[Any, ...]) -> None:
    ours = b"".join(HiredisPackedConnection().pack_command(*args))
    theirs = b"".join(Connection().pack_command(*args))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None])
def test_arguments_redis_py_refuses_are_still_refused(bad: Any) -> None:
    with pytest.raises(DataError):
        HiredisPackedConnection().pack_command("SET", "k", bad)


async def test_commands_scripts_and_pipelines_work_through_the_packed_client(
    redis_url: str,
) -> None:
    client = connect_server(RedisSettings(url=redis_url))
    try:
        assert client.connection_pool.connection_class is HiredisPackedConnection
        await client.client_setname("emp-test")
        assert await client.client_getname() == "emp-test"
        echo = client.register_script("return {ARGV[1], ARGV[2], #KEYS}")
        assert await echo(keys=["a"], args=["é", 1.5]) == [b"\xc3\xa9", b"1.5", 1]
        async with client.pipeline(transaction=True) as pipe:
            # One command a line: redis-py types each queued command as an awaitable reply.
            pipe.set("k", "x" * 100_000)
            pipe.strlen("k")
            pipe.delete("k")
            assert await pipe.execute() == [True, 100_000, 1]
    finally:
        await client.aclose()


async def test_a_command_larger_than_the_write_buffer_goes_through(redis_url: str) -> None:
    # 1 MiB is over the transport's high-water mark: redis-py's timed write takes it.
    client = connect_server(RedisSettings(url=redis_url))
    try:
        await client.set("big", b"x" * (1 << 20))
        assert await client.strlen("big") == 1 << 20
        await client.set("small", "y")
        assert await client.get("small") == b"y"
    finally:
        await client.aclose()


@pytest.fixture
def frozen_server(tmp_path: Path) -> Iterator[Server]:
    """A server that stops answering (SIGSTOP) once a client is connected: `freeze()`."""
    server = Server(tmp_path, "frozen")
    server.start()
    try:
        yield server
    finally:
        server.stop()  # thaws it first


@pytest.fixture
async def impatient(frozen_server: Server) -> AsyncIterator[Redis]:
    """A client of `frozen_server` with timeouts of a quarter second and no retries (a
    timeout surfaces as raised), connected and answered once; the server is thawed and
    the client closed afterwards, whatever the test did."""
    client = Redis.from_url(
        frozen_server.url,
        socket_timeout=0.25,
        connection_class=HiredisPackedConnection,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        await client.client_setname("before-freeze")
        yield client
    finally:
        frozen_server.thaw()
        await client.aclose()


async def test_a_command_to_a_server_that_stopped_answering_times_out_and_drops_its_connection(
    frozen_server: Server, impatient: Redis
) -> None:
    conn = impatient.connection_pool._available_connections[0]
    frozen_server.freeze()
    # The write fits the buffer and goes at once; the read is what times out.
    with pytest.raises(RedisTimeoutError):
        await impatient.ping()
    # The reply may still come; it must not be read as the next command's.
    assert not conn.is_connected
    frozen_server.thaw()
    assert await impatient.echo("after") == b"after"
    assert await impatient.client_getname() is None  # a new connection, not the old one


async def test_a_read_cancelled_from_elsewhere_is_cancelled_not_timed_out(
    frozen_server: Server, impatient: Redis
) -> None:
    frozen_server.freeze()

    async def ping() -> None:
        await impatient.ping()

    reading = asyncio.create_task(ping())
    await asyncio.sleep(0)  # the command is sent and its read begins
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_the_read_watch_stops_once_the_connection_stops_reading(redis_url: str) -> None:
    client = Redis.from_url(redis_url, socket_timeout=0.1, connection_class=HiredisPackedConnection)
    try:
        for _ in range(20):
            await client.ping()
        conn = client.connection_pool._available_connections[0]
        assert isinstance(conn, HiredisPackedConnection)
        assert conn._watch is not None  # one watch, armed by the first read, kept since
        # Idle: one look finds a read since the last one, the next finds none and stops.
        await wait_until(lambda: conn._watch is None, timeout=10)
        await client.ping()
        assert conn._watch is not None
    finally:
        await client.aclose()


async def test_a_write_the_server_does_not_take_times_out(
    frozen_server: Server, impatient: Redis
) -> None:
    frozen_server.freeze()
    # More than the kernel's socket buffers hold: the write itself cannot finish.
    with pytest.raises(RedisTimeoutError):
        await impatient.set("huge", b"x" * (64 << 20))
    frozen_server.thaw()
    # The dropped connection still flushes what it buffered before it closes: once the
    # server has the whole command, the socket is gone too.
    async with Redis.from_url(frozen_server.url) as other:
        await wait_until(lambda: other.exists("huge"), timeout=30)


async def test_a_connection_the_server_closed_is_replaced_for_the_next_command(
    redis_url: str, redis: Any
) -> None:
    client = connect_server(RedisSettings(url=redis_url), max_connections=1)
    try:
        await client.client_setname("emp-killed")
        mine = await client.client_id()
        assert await redis.client_kill_filter(_id=mine) == 1
        # The dead connection is found out and replaced (the client's retry), as always.
        assert await client.echo("again") == b"again"
        assert await client.client_id() != mine
    finally:
        await client.aclose()


async def test_a_due_health_check_still_pings_before_the_command(
    redis_url: str, redis: Any
) -> None:
    client = connect_server(RedisSettings(url=redis_url), max_connections=1)
    try:
        await client.echo("connect")
        conn = client.connection_pool._available_connections[0]  # the one connection
        conn.next_health_check = 0  # as if idle for longer than health_check_interval
        before = (await redis.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
        assert await client.echo("checked") == b"checked"
        after = (await redis.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
        assert after == before + 1
    finally:
        await client.aclose()
