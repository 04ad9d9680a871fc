"""What the direct worker's Redis ACL (release/README.md) allows and refuses, on a real Redis.

The README states three things about the `emp-worker` user, and each test holds one of them:
it runs everything a worker does; it refuses the administrative commands and every key
outside the job families; and it still lets a worker read any job, because the Lua scripts
run with the caller's rights. The last one is why untrusted boxes use the gateway instead.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from shared.broker import Broker, Claim, NoClaim
from shared.keys import Keys
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from shared.worker_grants import Grant, GrantStore
from tests.factories import job as job_request
from tests.helpers import redis_command
from tests.hub_support import capabilities

README = Path(__file__).resolve().parents[2] / "release" / "README.md"
PASSWORD = "acl-test-password"


def readme_acl() -> list[str]:
    line = next(
        line
        for line in README.read_text("utf-8").splitlines()
        if line.startswith("ACL SETUSER emp-worker ")
    )
    return line.replace(">change-me", f">{PASSWORD}").split()[1:]


def readme_pool_patterns() -> list[str]:
    """The extra patterns release/README.md gives for the pool `gpu-eu`."""
    found = re.search(r"`(~\{gpu-eu\}:job:\*.*?)`", README.read_text("utf-8"), re.DOTALL)
    assert found, "release/README.md gives no key patterns for a named pool"
    return found[1].split()


@pytest.fixture
async def worker_redis(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    await redis_command(redis, "ACL", *readme_acl())
    scheme, rest = redis_url.split("://", 1)
    client = connect_server(
        RedisSettings(url=f"{scheme}://emp-worker:{PASSWORD}@{rest.split('@')[-1]}")
    )
    try:
        yield client
    finally:
        await client.aclose()
        await redis_command(redis, "ACL", "DELUSER", "emp-worker")


async def test_the_acl_runs_everything_a_worker_does(
    worker_redis: Redis, broker: Broker, broker_settings: BrokerSettings
) -> None:
    await run_everything_a_worker_does(Broker(worker_redis, broker_settings), broker)


async def test_the_acl_with_a_pools_patterns_runs_everything_a_worker_does_in_that_pool(
    redis: Redis, redis_url: str, broker_settings: BrokerSettings
) -> None:
    """The README's recipe for a named pool: the same patterns under `{gpu-eu}:`."""
    await redis_command(redis, "ACL", *readme_acl(), *readme_pool_patterns())
    scheme, rest = redis_url.split("://", 1)
    url = f"{scheme}://emp-worker:{PASSWORD}@{rest.split('@')[-1]}"
    client = connect_server(RedisSettings(url=url))
    settings = dataclasses.replace(broker_settings, pools=("gpu-eu",))
    try:
        hub = Broker(redis, settings, pool="gpu-eu")
        await run_everything_a_worker_does(Broker(client, settings, pool="gpu-eu"), hub)
    finally:
        await client.aclose()
        await redis_command(redis, "ACL", "DELUSER", "emp-worker")


async def test_the_acl_runs_a_worker_whose_claims_apply_scheduling_policies(
    worker_redis: Redis, broker: Broker, broker_settings: BrokerSettings
) -> None:
    """Fair share charges usage and reads the published weights; a bounded policy's holds
    are indexed: the ACL covers those keys too."""
    await broker.publish_policy("hub", {"*": 1})
    policies = ("fit", "fair", "affinity")
    settings = dataclasses.replace(broker_settings, scheduling_policies=policies)
    await run_everything_a_worker_does(Broker(worker_redis, settings), broker)
    assert await broker.reads.fair.shares(300)  # the worker's jobs were charged


async def test_the_acl_runs_a_worker_indexed_and_woken_for_its_warm_models(
    worker_redis: Redis, broker: Broker, broker_settings: BrokerSettings
) -> None:
    """An idle worker with affinity on is indexed under its warm models (warm:*), and a job
    it releases wakes another warm idle worker from the worker's own script call."""
    settings = dataclasses.replace(broker_settings, scheduling_policies=("affinity",))
    worker = Broker(worker_redis, settings)
    warm = capabilities(models=["sdxl"], warm_models=["sdxl"])
    for worker_id in ("acl-a", "acl-b"):
        await worker.register_worker(worker_id, warm, {"host": "box"})
        assert not isinstance(await worker.claim(worker_id, warm), Claim)
    await broker.submit(job_request("comfyui", id="warm-job", requirements={"models": ["sdxl"]}))
    claim = await worker.claim("acl-a", warm)
    assert isinstance(claim, Claim)
    assert await worker.release("acl-a", "warm-job", claim.token, "stopping") == "ok"
    assert await broker.redis.llen(broker.keys.wake("acl-b")) == 1


async def test_the_acl_runs_a_worker_that_accepts_handoffs(
    worker_redis: Redis, broker: Broker, broker_settings: BrokerSettings
) -> None:
    """A job handed to an idle worker (include/handoff.lua) reaches it through its wait
    (BLPOP), or through its claim where the claim comes first (LRANGE, LREM)."""
    worker = Broker(worker_redis, broker_settings, handoff=True)
    caps = capabilities()
    encoded = Broker.encode_capabilities(caps)
    await worker.register_worker("acl-h", caps, {"host": "box"})
    assert not isinstance(await worker.claim("acl-h", caps), Claim)
    await broker.submit(job_request("comfyui", id="handed-1"))
    handed = await worker.wait_for_work(["comfyui"], 1, worker_id="acl-h")
    assert isinstance(handed, Claim)
    fence, follow_up = await worker.complete_and_claim(
        "acl-h", "handed-1", handed.token, None, encoded
    )
    assert (fence, follow_up) == ("ok", NoClaim("empty", None))
    await broker.submit(job_request("comfyui", id="handed-2"))
    taken = await worker.claim("acl-h", caps)
    assert isinstance(taken, Claim)
    assert taken.job.id == "handed-2"


async def run_everything_a_worker_does(worker: Broker, broker: Broker) -> None:
    """Every call a direct worker makes, as `worker`; `broker` (the hub) submits."""
    worker_redis = worker.redis
    for n in range(3):
        await broker.submit(job_request("comfyui", id=f"acl-{n}"))
    caps = capabilities()
    await worker.register_worker("acl-w", caps, {"host": "box"})
    assert await worker.wait_for_work(["comfyui"], 0.05, worker_id="acl-w") is not None
    first = await worker.claim("acl-w", caps)
    assert isinstance(first, Claim)
    assert await worker.progress("acl-w", first.job.id, first.token, 50, "half") == "ok"
    assert await worker.heartbeat("acl-w", running={first.job.id: first.token}) == []
    fence, second = await worker.complete_and_claim(
        "acl-w", first.job.id, first.token, {"ok": 1}, Broker.encode_capabilities(caps)
    )
    assert fence == "ok"
    assert isinstance(second, Claim)
    assert await worker.fail("acl-w", second.job.id, second.token, "boom") == "retrying"
    third = await worker.claim("acl-w", caps)
    assert isinstance(third, Claim)
    assert await worker.release("acl-w", third.job.id, third.token, "stopping") == "ok"
    # Claims that find nothing index the worker as idle (include/idle_workers.lua).
    while isinstance(last := await worker.claim("acl-w", caps), Claim):
        assert await worker.complete("acl-w", last.job.id, last.token, None) == "ok"
    assert last.reason == "empty"
    replicas = await redis_command(worker_redis, "WAIT", 0, 10)  # REDIS_WAIT_REPLICAS
    assert isinstance(replicas, int)
    assert replicas >= 0
    pubsub = worker_redis.pubsub()
    await pubsub.subscribe(worker.keys.control("acl-w"))
    await pubsub.aclose()
    assert await worker.deregister_worker("acl-w") >= 0


REFUSED_COMMANDS = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("KEYS", "*"),
    ("SCAN", "0"),
    ("CONFIG", "GET", "*"),
    ("ACL", "LIST"),
    ("SHUTDOWN",),
    ("EVAL", "return 1", "0"),
    ("XREAD", "STREAMS", "events", "0"),
    ("CLIENT", "LIST"),
    ("INFO",),
]


@pytest.mark.parametrize("command", REFUSED_COMMANDS, ids=lambda c: " ".join(c[:2]))
async def test_the_acl_refuses_administrative_commands(
    worker_redis: Redis, command: tuple[str, ...]
) -> None:
    with pytest.raises(NoPermissionError):
        await redis_command(worker_redis, *command)


async def test_the_acl_keeps_a_worker_out_of_the_gateway_grants(
    worker_redis: Redis, redis: Redis
) -> None:
    keys = Keys()
    await GrantStore(redis, keys).issue(Grant(worker_id="gw-1", services=["comfyui"]))
    for command in [
        ("HGETALL", keys.gateway_grants),
        ("HSET", keys.gateway_grants, "forged-digest", "{}"),
        ("HGETALL", keys.gateway_workers),
        ("GET", "anything-else"),
    ]:
        with pytest.raises(NoPermissionError):
            await redis_command(worker_redis, *command)
    # ... nor through a script of its own: Redis checks each command a script runs.
    sha = await worker_redis.script_load("return redis.call('HGETALL', KEYS[1])")
    with pytest.raises((NoPermissionError, ResponseError), match=r"(?i)no permissions|NOPERM"):
        await worker_redis.evalsha(sha, 1, keys.gateway_grants)


async def test_the_acl_still_lets_a_worker_read_any_job(
    worker_redis: Redis, broker: Broker
) -> None:
    """The limit no ACL can remove: the scripts read and write job hashes with the caller's
    rights, so a worker user holds them on every job. release/README.md says so."""
    await broker.submit(
        job_request("comfyui", id="other-tenant", customer_id="globex", payload={"secret": 1})
    )
    assert await worker_redis.hget(broker.keys.job("other-tenant"), "payload") == b'{"secret":1}'
