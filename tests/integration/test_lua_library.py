"""The scripts run as Redis Functions from one library (shared/lua_source.py), loaded by the
first call that finds it missing, and fall back to EVALSHA of the same code where Functions
cannot be used (shared/scripts.py). What must hold: a call that found no library ran
nothing and runs once; a user who may not call or load Functions still runs every script;
both forms give the same answers; and nothing of one call stays behind for the next, since
the library's helpers outlive calls."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, OutOfMemoryError

import shared.scripts
from shared.broker import Broker, Claim
from shared.lua_source import library, library_name
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.factories import caps, job
from tests.helpers import redis_command, wait_until
from tests.hub_support import hub_client, hub_settings

PASSWORD = "library-test-password"


async def command_calls(redis: Redis, command: str) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def loaded_libraries(redis: Redis) -> list[str]:
    listed = await redis.function_list(library="emp_*")
    return sorted(
        entry[entry.index(b"library_name") + 1].decode()
        for entry in listed
        if isinstance(entry, list)
    )


async def user_client(redis: Redis, redis_url: str, *rules: str) -> Redis:
    """A client logged in as a user allowed everything but `rules` take away."""
    await redis_command(
        redis,
        "ACL",
        "SETUSER",
        "limited",
        "reset",
        "on",
        f">{PASSWORD}",
        "~*",
        "&*",
        "+@all",
        *rules,
    )
    scheme, rest = redis_url.split("://", 1)
    url = f"{scheme}://limited:{PASSWORD}@{rest.split('@')[-1]}"
    return connect_server(RedisSettings(url=url))


@pytest.fixture
async def no_library(redis: Redis) -> AsyncIterator[None]:
    """A Redis that holds no library (as a fresh or restarted one), its command counts at 0."""
    await redis.function_flush()
    await redis.config_resetstat()
    yield
    await redis_command(redis, "ACL", "DELUSER", "limited")


async def test_the_first_call_loads_the_library_and_later_calls_are_fcalls(
    broker: Broker, redis: Redis, no_library: None
) -> None:
    await broker.submit(job(id="first"))
    assert await loaded_libraries(redis) == [library_name()]
    fcalls = await command_calls(redis, "fcall")
    await broker.submit(job(id="second"))
    assert await command_calls(redis, "fcall") == fcalls + 1
    assert await command_calls(redis, "evalsha") == 0
    assert await broker.pending_count() == 2


async def test_a_library_the_server_lost_is_loaded_again_and_the_call_runs_once(
    broker: Broker, redis: Redis, no_library: None
) -> None:
    await broker.submit(job(id="before"))
    await redis.function_flush()
    submitted = await broker.submit(job(id="after"))
    assert submitted.created
    assert await broker.pending_count() == 2  # the call that found no library ran once
    claim = await broker.claim("w1", caps())
    assert isinstance(claim, Claim)
    assert claim.job.id == "before"


async def test_calls_sent_together_that_find_no_library_each_run_once(
    broker: Broker, redis: Redis, no_library: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submit_many sends its calls (three here) one after another before reading a reply:
    every one of them meets the missing library, and each is sent again once."""
    monkeypatch.setattr("shared.broker.BATCH_SCRIPT_JOBS", 2)
    submitted = await broker.submit_many([job(id=f"j{i}") for i in range(5)])
    assert [s.job_id for s in submitted] == [f"j{i}" for i in range(5)]
    assert await broker.pending_count() == 5


async def test_a_user_without_fcall_runs_every_script_with_evalsha(
    redis: Redis, redis_url: str, broker_settings: BrokerSettings, no_library: None
) -> None:
    """The worker ACL of older releases has +evalsha and no +fcall."""
    client = await user_client(redis, redis_url, "-fcall")
    try:
        broker = Broker(client, broker_settings)
        await broker.submit(job(id="a"))
        claim = await broker.claim("w1", caps())
        assert isinstance(claim, Claim)
        assert await broker.complete("w1", "a", claim.token, {"ok": True}) == "ok"
    finally:
        await client.aclose()
    assert await command_calls(redis, "evalsha") >= 3
    assert await command_calls(redis, "fcall") == 0


async def test_a_user_who_may_not_load_the_library_uses_evalsha_until_a_hub_has_loaded_it(
    redis: Redis,
    redis_url: str,
    broker_settings: BrokerSettings,
    no_library: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared.scripts, "EVAL_FALLBACK_SECONDS", 0.5)
    client = await user_client(redis, redis_url, "-function")
    try:
        worker = Broker(client, broker_settings)
        await worker.submit(job(id="a"))  # found no library, could not load it: EVALSHA
        assert await loaded_libraries(redis) == []
        assert await command_calls(redis, "evalsha") == 1
        # A hub's call loads the library; once the fallback time is over, the worker's
        # calls are FCALLs again.
        await Broker(redis, broker_settings).submit(job(id="b"))
        fcalls = await command_calls(redis, "fcall")
        submitted = 0

        async def worker_calls_functions() -> bool:
            nonlocal submitted
            submitted += 1
            await worker.submit(job(id=f"w{submitted}"))
            return await command_calls(redis, "fcall") > fcalls

        await wait_until(worker_calls_functions, timeout=10, interval=0.05, message="FCALL again")
        assert await worker.pending_count() == 2 + submitted
    finally:
        await client.aclose()


async def test_a_user_without_the_right_to_load_functions_cannot_replace_the_library(
    redis: Redis, redis_url: str, broker: Broker, no_library: None
) -> None:
    """Whoever can load a library can replace this one, and the hubs would then run its
    code: the fallback must not need that right (release/README.md keeps it from workers)."""
    await broker.submit(job(id="a"))
    client = await user_client(redis, redis_url, "-function")
    try:
        evil = library().replace("return run_submit()", "return 'replaced'")
        with pytest.raises(NoPermissionError):
            await client.function_load(evil, replace=True)
    finally:
        await client.aclose()
    assert (await broker.submit(job(id="b"))).created
    assert await broker.pending_count() == 2


# --- both forms, one behaviour ----------------------------------------------------------------


async def scenario(broker: Broker) -> list[object]:
    """A run through the main state changes, as comparable values."""
    out: list[object] = []
    for i, priority in enumerate((1, 5, 5, 3)):
        submitted = await broker.submit(job(id=f"j{i}", priority=priority))
        out.append(("submitted", submitted.job_id, submitted.created))
    out.append(("again", (await broker.submit(job(id="j1", priority=5))).created))
    first = await broker.claim("w1", caps())
    assert isinstance(first, Claim)
    out.append(("claimed", first.job.id))
    fence, second = await broker.complete_and_claim(
        "w1", first.job.id, first.token, {"n": 1}, Broker.encode_capabilities(caps())
    )
    out.append(("completed", fence))
    assert isinstance(second, Claim)
    out.append(("claimed", second.job.id))
    out.append(("failed", await broker.fail("w1", second.job.id, second.token, "boom")))
    out.append(("stale", await broker.complete("w1", first.job.id, first.token, None)))
    out.append(("cancelled", msgspec.structs.astuple(await broker.cancel("j3"))))
    out.append(("pending", await broker.pending_count()))
    for job_id in ("j0", "j1", "j2", "j3"):
        record = await broker.get(job_id)
        out.append((job_id, record and record.status, record and record.attempts))
    return out


async def test_the_library_and_the_scripts_give_the_same_answers(
    redis: Redis, redis_url: str, broker_settings: BrokerSettings, no_library: None
) -> None:
    with_functions = await scenario(Broker(redis, broker_settings))
    assert await command_calls(redis, "evalsha") == 0
    await redis.flushall()
    client = await user_client(redis, redis_url, "-fcall")
    try:
        with_scripts = await scenario(Broker(client, broker_settings))
    finally:
        await client.aclose()
    assert await command_calls(redis, "evalsha") > 0
    assert with_scripts == with_functions


# --- nothing of one call stays for the next ---------------------------------------------------


async def test_each_call_uses_its_own_key_prefix(
    redis: Redis, broker_settings: BrokerSettings
) -> None:
    """keys.lua rebuilds its names when the prefix changes between calls."""
    first = Broker(redis, dataclasses.replace(broker_settings, prefix="one:"))
    second = Broker(redis, dataclasses.replace(broker_settings, prefix="two:"))
    await first.submit(job(id="a"))
    await second.submit(job(id="b"))
    await first.submit(job(id="c"))
    assert await redis.zcard("one:jobs:pending") == 2
    assert await redis.zcard("two:jobs:pending") == 1
    assert await redis.exists("one:job:a", "one:job:c", "two:job:b") == 3
    assert await redis.exists("one:job:b", "two:job:a", "job:a") == 0


async def test_each_call_reads_the_server_time_afresh(broker: Broker, redis: Redis) -> None:
    await broker.submit(job(id="a"))
    created_a = (await broker.get("a")).created_at  # type: ignore[union-attr]

    async def clock_moved() -> bool:
        seconds, micros = await redis.time()
        return seconds * 1000 + micros // 1000 > created_a + 2

    await wait_until(clock_moved, timeout=5, interval=0.001, message="Redis's clock moved")
    await broker.submit(job(id="b"))
    created_b = (await broker.get("b")).created_at  # type: ignore[union-attr]
    assert created_b > created_a + 2


async def test_each_call_reads_the_fleet_policy_afresh(
    broker: Broker, redis: Redis, broker_settings: BrokerSettings
) -> None:
    """policy.lua memoises the published policy within a call only: a hub's new retention
    applies to the next completion."""
    keys = broker.keys
    for job_id, retention in (("a", 100.0), ("b", 5000.0)):
        hub = Broker(redis, dataclasses.replace(broker_settings, retention=retention))
        await hub.publish_policy("hub-1")
        await broker.submit(job(id=job_id))
        claim = await broker.claim("w1", caps())
        assert isinstance(claim, Claim)
        assert claim.job.id == job_id
        assert await broker.complete("w1", job_id, claim.token, None) == "ok"
    ttl_a, ttl_b = await redis.ttl(keys.job("a")), await redis.ttl(keys.job("b"))
    assert 0 < ttl_a <= 100
    assert 4000 < ttl_b <= 5000


async def test_at_maxmemory_a_call_that_grows_is_refused_whole_and_cleanup_still_runs(
    broker: Broker, redis: Redis
) -> None:
    """cleanup.lua only frees memory, so it is flagged allow-oom (an EVALSHA script would
    have run too): the maintenance that trims finished jobs keeps working at maxmemory."""
    await broker.submit(job(id="a"))
    await redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(OutOfMemoryError):
            await broker.submit(job(id="b"))
        assert await broker.cleanup() == {"completed": 0, "failed": 0, "cancelled": 0}
    finally:
        await redis.config_set("maxmemory", 0)
    assert await broker.pending_count() == 1
    assert await redis.exists(broker.keys.job("b")) == 0


# --- the libraries of other versions ----------------------------------------------------------

OLD_LIBRARY = "emp_00000000000000aa"


async def load_other_libraries(redis: Redis) -> None:
    """An older version's library, and a library that is not ours."""
    for name in (OLD_LIBRARY, "theirs"):
        code = f"#!lua name={name}\nredis.register_function('{name}_f', function() return 1 end)"
        await redis.function_load(code, replace=True)


async def test_pruning_deletes_the_libraries_of_other_versions_only(
    broker: Broker, redis: Redis, no_library: None
) -> None:
    await broker.submit(job(id="a"))
    await load_other_libraries(redis)
    assert await broker.prune_libraries() == [OLD_LIBRARY]
    assert await loaded_libraries(redis) == [library_name()]
    assert await redis.function_list(library="theirs")
    assert await broker.prune_libraries() == []


async def test_a_process_of_the_old_version_loads_its_library_again_after_a_prune(
    broker: Broker, redis: Redis, no_library: None
) -> None:
    """During a rolling upgrade: the new hub deleted this version's library; this
    version's next call finds it missing, loads it, and runs once."""
    await broker.submit(job(id="a"))
    await redis.function_delete(library_name())
    assert (await broker.submit(job(id="b"))).created
    assert await broker.pending_count() == 2
    assert await loaded_libraries(redis) == [library_name()]


async def test_a_hub_deletes_the_libraries_of_other_versions_when_it_starts(
    redis: Redis, redis_url: str, no_library: None
) -> None:
    await load_other_libraries(redis)
    async with hub_client(hub_settings(redis_url)):
        assert await loaded_libraries(redis) == [library_name()]
