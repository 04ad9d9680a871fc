"""Script calls take a short path past redis-py's command wrapping (shared/scripts.py); what
redis-py's path did for them must still happen: reload a script the server lost, reconnect
after a lost connection (the connection it keeps between calls included), serve many callers
at once. A batch's calls reach Redis one by one as they are made, and a batch whose
connection was lost is sent again whole, each job written once. Submission memoises requirement class ids: they stay those of
`requirement_class`."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

import shared.broker
from shared.broker import Broker, Claim
from shared.broker_replies import text
from shared.redis_client import connect_server
from shared.redis_connections import HiredisPackedConnection
from shared.redis_settings import RedisSettings
from shared.requirements import requirement_class
from shared.scripts import KEPT_CONNECTIONS, Scripts
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.redis_servers import Server


async def test_a_library_the_server_lost_is_loaded_again(broker: Broker, redis: Redis) -> None:
    await broker.submit(job(id="before"))
    await redis.function_flush()
    submitted = await broker.submit(job(id="after"))
    assert submitted.created
    assert await broker.pending_count() == 2
    claim = await broker.claim("w1", caps())
    assert isinstance(claim, Claim)
    assert claim.job.id == "before"


@pytest.mark.parametrize("blocking", [True, False], ids=["no-timeout", "timeout"])
async def test_a_connection_the_server_closed_is_reopened(
    redis_url: str, broker_settings: BrokerSettings, blocking: bool
) -> None:
    # Both kinds of client: a command client (a read timeout; its small writes go without
    # one, shared/redis_connections.py) and a blocking one (no timeouts at all).
    client = connect_server(RedisSettings(url=redis_url), blocking=blocking)
    try:
        broker = Broker(client, broker_settings)
        await broker.submit(job(id="first"))
        # Another client drops every other connection: the broker's kept one among them.
        other = Redis.from_url(redis_url)
        try:
            killed = await other.client_kill_filter(_type="normal", skipme=True)
        finally:
            await other.aclose()
        assert int(killed) >= 1
        submitted = await broker.submit(job(id="second"))
        assert submitted.created
        assert submitted.job_id == "second"
        assert await broker.pending_count() == 2
    finally:
        await client.aclose()


async def test_a_connection_error_is_retried_as_redis_py_retries(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await broker.submit(job(id="first"))
    real_send = HiredisPackedConnection.send_command
    failures = [RedisConnectionError("connection dropped while sending")]

    async def flaky_send(conn: HiredisPackedConnection, *args: Any, **options: Any) -> None:
        if failures:
            await conn.disconnect()
            raise failures.pop()
        await real_send(conn, *args, **options)

    monkeypatch.setattr(HiredisPackedConnection, "send_command", flaky_send)
    submitted = await broker.submit(job(id="second"))
    assert not failures, "the short path was not taken"
    assert submitted.created
    assert submitted.job_id == "second"
    assert await broker.pending_count() == 2


def _next_read_loses_its_reply(monkeypatch: pytest.MonkeyPatch) -> list[Exception]:
    """The next reply read arrives, then its connection drops before the caller gets it.
    Returns the pending failure: empty once it has happened."""
    real_read = HiredisPackedConnection.read_response
    failures: list[Exception] = [RedisConnectionError("connection dropped while reading")]

    async def lossy_read(conn: HiredisPackedConnection, *args: Any, **options: Any) -> Any:
        reply = await real_read(conn, *args, **options)
        if failures:
            await conn.disconnect()
            raise failures.pop()
        return reply

    monkeypatch.setattr(HiredisPackedConnection, "read_response", lossy_read)
    return failures


async def test_a_reply_lost_after_the_script_ran_leaves_exactly_one_job(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The script ran, then the connection dropped before its reply was read: the retry
    # sends the same job id again, which finds the job instead of writing a second one.
    await broker.submit(job(id="first"))
    failures = _next_read_loses_its_reply(monkeypatch)
    submitted = await broker.submit(job(id="second"))
    assert not failures, "the short path was not taken"
    assert submitted.job_id == "second"
    assert await broker.pending_count() == 2
    monkeypatch.undo()
    # The connection the retry reopened serves the next call.
    assert (await broker.submit(job(id="third"))).created
    assert await broker.pending_count() == 3


def _batch_of_one(job_id: str) -> list[str | int]:
    """submit_batch's arguments for one job of service `sim` without requirements."""
    fields = ["service_type", "sim", "requirements", "{}"]
    return [1, job_id, "", "class-sim", 50, len(fields), *fields]


async def test_streamed_calls_each_reach_redis_before_the_next_is_made(
    broker: Broker, redis: Redis, redis_url: str
) -> None:
    """Scripts.call_streamed (submit_many's batches) writes each call as it is made: Redis
    has run it by the time the caller makes the next one. A pipeline would still hold it,
    and this caller would wait in vain."""
    scripts = Scripts(redis, broker.keys, events_max=1000, retention_ms=60_000)
    observer = SyncRedis.from_url(redis_url)
    found_before_next: list[bool] = []

    def ran(job_id: str) -> bool:
        deadline = time.monotonic() + 5
        while not observer.exists(broker.keys.job(job_id)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def calls() -> Iterator[list[str | int]]:
        for i in range(3):
            if i:
                found_before_next.append(ran(f"b{i - 1}"))
            yield _batch_of_one(f"b{i}")

    try:
        replies = await scripts.call_streamed("submit_batch", calls())
    finally:
        observer.close()
    assert found_before_next == [True, True]
    assert [text(r[1]) for r in replies] == ["b0", "b1", "b2"]
    assert await broker.pending_count() == 3


async def test_a_batch_whose_replies_were_lost_is_sent_again_and_writes_each_job_once(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three calls ran, then the connection dropped while their replies were read: the retry
    # sends all three again on a new connection, and each finds its jobs written.
    monkeypatch.setattr(shared.broker, "BATCH_SCRIPT_JOBS", 2)
    await broker.submit(job(id="first"))
    failures = _next_read_loses_its_reply(monkeypatch)
    ids = [f"j{i}" for i in range(5)]
    submitted = await broker.submit_many([job(id=job_id) for job_id in ids])
    assert not failures, "the streamed path was not taken"
    assert [s.job_id for s in submitted] == ids
    assert await broker.pending_count() == 6
    monkeypatch.undo()
    for expected in ["first", *ids]:  # each once, in submission order
        claim = await broker.claim("w1", caps())
        assert isinstance(claim, Claim)
        assert claim.job.id == expected
    assert not isinstance(await broker.claim("w1", caps()), Claim)  # and no second copy


async def test_a_restarted_server_is_reconnected_and_sent_the_script_again(
    tmp_path: Path,
) -> None:
    # The kept connection died with the server, and the new server has no scripts: the
    # next submission reconnects, loads the script and writes its job once.
    server = Server(tmp_path, "restarted")
    server.start()
    client = connect_server(RedisSettings(url=server.url))
    try:
        broker = Broker(client)
        assert (await broker.submit(job(id="before"))).created
        server.kill()
        server.start()
        submitted = await broker.submit(job(id="after"))
        assert submitted.created
        assert submitted.job_id == "after"
        assert await broker.pending_count() == 1
    finally:
        await client.aclose()
        server.stop()


async def test_concurrent_submissions_each_write_their_job_once(broker: Broker) -> None:
    # More callers at once than the script caller keeps connections for: each gets one,
    # and each job is written once, all of them pending.
    requests = [job(id=f"job-{n}") for n in range(3 * KEPT_CONNECTIONS + 1)]
    submitted = await asyncio.gather(*(broker.submit(r) for r in requests))
    assert all(s.created for s in submitted)
    assert sorted(s.job_id for s in submitted) == sorted(r.id or "" for r in requests)
    assert await broker.pending_count() == len(requests)
    # And later calls, one at a time, still go through: the connections were given back.
    for n in range(2 * KEPT_CONNECTIONS):
        assert (await broker.submit(job(id=f"later-{n}"))).created


async def test_brokers_made_one_after_another_share_their_clients_connections(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    # A client of 16 connections serves any number of Brokers made on it: the connections
    # kept between calls belong to the client's pool, not to each Broker.
    client = connect_server(RedisSettings(url=redis_url), max_connections=16)
    try:
        for n in range(20):
            assert (await Broker(client, broker_settings).submit(job(id=f"job-{n}"))).created
        assert await client.zcard(Broker(client, broker_settings).keys.pending) == 20
    finally:
        await client.aclose()


async def test_a_small_pool_keeps_no_connection_from_its_other_users(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    # Two connections, both busy with submissions at once, are both free again afterwards:
    # a pipeline and a command can hold one each at the same time.
    client = connect_server(RedisSettings(url=redis_url), max_connections=2)
    try:
        broker = Broker(client, broker_settings)
        await asyncio.gather(broker.submit(job(id="a")), broker.submit(job(id="b")))
        async with client.pipeline(transaction=False) as pipe:
            pipe.zcard(broker.keys.pending)
            pipe.zcard(broker.keys.pending)
            held = asyncio.create_task(pipe.execute())
            assert await client.zcard(broker.keys.pending) == 2
            assert await held == [2, 2]
    finally:
        await client.aclose()


async def test_a_closed_clients_brokers_leave_nothing_behind(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    # What is kept for a client's pool goes when the client does.
    client = connect_server(RedisSettings(url=redis_url))
    await Broker(client, broker_settings).submit(job(id="only"))
    kept = weakref.ref(client.connection_pool)
    await client.aclose()
    del client
    gc.collect()
    assert kept() is None


async def test_submitted_carries_the_preferred_models_for_a_new_and_a_repeated_job(
    broker: Broker,
) -> None:
    request = job(id="sdxl-job", requirements={"models": ["sdxl", "vae"]})
    first = await broker.submit(request)
    again = await broker.submit(request)
    assert first.created
    assert not again.created
    assert first.preferred_models == again.preferred_models == ("sdxl", "vae")


@pytest.mark.parametrize("cache_size", [1, 4096])
async def test_class_ids_are_those_of_requirement_class(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    # Size 1 empties the memo on every new document: the refill path is exercised too.
    monkeypatch.setattr(shared.broker, "_CLASS_IDS_MAX", cache_size)
    monkeypatch.setattr(shared.broker, "_CLASS_IDS", {})
    requests = [
        job(requirements={"models": ["sdxl"]}),
        job(requirements={"models": ["sdxl"]}, customer_id="c1"),
        job(requirements={"models": ["sdxl"]}, customer_id="c2"),
        job(service="other", requirements={"models": ["sdxl"]}),
        job(requirements={"models": ["flux"]}),
        job(requirements={"models": ["sdxl"]}),
    ]
    for request in requests:
        submitted = await broker.submit(request)
        stored = await broker.redis.hget(broker.keys.job(submitted.job_id), "class_id")
        expected = requirement_class(
            request.service_type, request.customer_id, request.requirements
        )
        assert stored is not None
        assert text(stored) == expected
