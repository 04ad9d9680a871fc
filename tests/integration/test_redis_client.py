"""The broker's Redis client packs commands with hiredis and must say exactly what redis-py's
own packer says: same bytes, same refusals, and real commands (scripts, pipelines,
multi-word names) still work against a real server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from shared.redis_client import connect_server
from shared.redis_connections import HiredisPackedConnection
from shared.redis_settings import RedisSettings

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


async def test_a_command_larger_than_the_socket_takes_at_once_still_arrives_whole(
    redis_url: str,
) -> None:
    """A send the kernel takes whole goes out without waiting; what it does not take is
    waited for (with the client's timeout) before the reply is read."""
    client = connect_server(RedisSettings(url=redis_url))
    big = b"x" * (32 * 1024 * 1024)  # far beyond a loopback socket's send buffer
    try:
        assert await client.set("big", big)
        assert await client.strlen("big") == len(big)
        assert await client.get("small") is None
    finally:
        await client.delete("big")
        await client.aclose()


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
