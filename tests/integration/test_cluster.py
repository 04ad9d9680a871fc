"""What only a Redis Cluster asks of the broker: each pool (a hash-tagged prefix) lives in one
slot on one primary, every call reaches that primary, blocking reads and pub/sub work across
nodes, WAIT counts the pool's own primary's replicas, and a pool keeps working while its slot
moves to another primary or its primary fails over.

One cluster serves the session (three primaries, one replica each: tests/redis_servers.py);
each test works in pools of its own (`cluster_prefix`), so nothing is emptied between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.crc import key_slot

from shared.broker import Broker, Claim, NoClaim
from shared.config import ConfigError
from shared.event_group import EventGroup
from shared.job import JobStatus
from shared.lua_source import library_name, source
from shared.pool_set import PoolSet
from shared.redis_client import connect, drop_connections
from shared.redis_types import RedisClient
from shared.replication import NotReplicated
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from shared.worker_grants import Grant, GrantStore
from tests.factories import caps, job
from tests.helpers import wait_until
from tests.redis_servers import Cluster, Server, TlsCluster
from worker.links import RedisLink

# As in test_replication_wait.py: an in-sync replica always answers well within this.
WAIT_MS = 1000


def settings_for(prefix: str, base: BrokerSettings) -> BrokerSettings:
    return dataclasses.replace(base, prefix=prefix)


def slot_of(prefix: str) -> int:
    return key_slot(prefix.encode())


def blocked_clients(node: Server) -> int:
    return int(str(node.info("clients")["blocked_clients"]))


def errorstat(node: Server, error: str) -> int:
    """How many replies `node` has answered with `error` (MOVED, ASK...) since it started."""
    found = node.info("errorstats").get(f"errorstat_{error}")
    return int(found["count"]) if isinstance(found, dict) else 0


@contextlib.contextmanager
def frozen(server: Server) -> Iterator[None]:
    """`server` answers nothing (SIGSTOP) until the block ends. Kept well under the cluster's
    node timeout, so no node is failed over for it."""
    server.freeze()
    try:
        yield
    finally:
        server.thaw()


@pytest.fixture
def broker(
    cluster_redis: RedisClient, broker_settings: BrokerSettings, cluster_prefix: str
) -> Broker:
    """A pool of the test's own on the session's cluster."""
    return Broker(cluster_redis, settings_for(cluster_prefix, broker_settings))


async def run_a_job(broker: Broker, job_id: str) -> str:
    """Submit, claim and complete one job; its id as stored (a named pool's carries it)."""
    stored = (await broker.submit(job(id=job_id))).job_id
    claim = await broker.claim("w", caps())
    assert isinstance(claim, Claim)
    assert claim.job.id == stored
    assert await broker.complete("w", stored, claim.token, {"ok": True}) == "ok"
    return stored


# -- one pool, one slot, one primary ------------------------------------------------------


async def test_three_pools_land_on_three_primaries(
    redis_cluster: Cluster, cluster_redis: RedisClient, broker_settings: BrokerSettings
) -> None:
    """Pools p1, p2 and p3 have the prefixes {p1}:, {p2}: and {p3}: on a cluster, which hash
    to slots 11819, 7752 and 3689: one in each third of the slots, so each pool is served by
    a different primary, which holds every key of its pool."""
    settings = dataclasses.replace(broker_settings, pools=("p1", "p2", "p3"))
    pools = PoolSet(cluster_redis, settings)
    owners = {broker.keys.prefix: redis_cluster.owner_of(broker.keys.prefix) for broker in pools}
    assert list(owners) == ["{p1}:", "{p2}:", "{p3}:"]
    assert len({owner.name for owner in owners.values()}) == 3
    for broker in pools:
        owner = owners[broker.keys.prefix]
        job_id = await run_a_job(broker, f"j-{uuid.uuid4().hex}")
        with owner.client() as direct:  # a plain client: only the owner holds the key
            assert direct.hget(broker.keys.job(job_id), "status") == b"completed"
            assert direct.zscore(broker.keys.finished("completed"), job_id) is not None


def test_every_pool_has_a_hash_tag_of_its_own_on_a_cluster(cluster_redis: RedisClient) -> None:
    """shared/pools.py tags a pool's prefix with the pool's name on a cluster, the default
    pool's too, so REDIS_KEY_PREFIX needs no tag. One that spoils the tag (an empty `{}`
    first: Redis would hash whole key names) is refused, naming the setting."""
    assert Broker(cluster_redis, BrokerSettings()).keys.prefix == "{default}:"
    assert Broker(cluster_redis, BrokerSettings(prefix="emp:"), pool="a").keys.prefix == "emp:{a}:"
    with pytest.raises(ConfigError, match=r"REDIS_KEY_PREFIX: '\{\}:\{default\}:' has no hash tag"):
        Broker(cluster_redis, BrokerSettings(prefix="{}:"))


async def test_concurrent_claimers_each_get_distinct_jobs(
    redis_cluster: Cluster, broker: Broker
) -> None:
    await broker.submit_many([job(id=f"j{i}") for i in range(400)])
    claimed: list[str] = []

    async def claimer(n: int) -> None:
        # A cluster client of its own: claims really interleave on the pool's primary.
        client = connect(redis_cluster.settings())
        own = Broker(client, broker.settings)
        try:
            while isinstance(c := await own.claim(f"w{n}", caps()), Claim):
                claimed.append(c.job.id)
                assert await own.complete(f"w{n}", c.job.id, c.token, None) == "ok"
        finally:
            await client.aclose()

    await asyncio.gather(*(claimer(n) for n in range(10)))
    assert Counter(claimed) == Counter(f"j{i}" for i in range(400))
    assert await broker.pending_count() == 0


# -- blocking reads and pub/sub across nodes ----------------------------------------------


async def test_an_idle_worker_wakes_when_a_job_arrives(
    redis_cluster: Cluster, broker: Broker
) -> None:
    """BLPOP on the pool's notify keys (one slot, so one node) from a blocking client."""
    blocking = connect(redis_cluster.settings(), blocking=True)
    waiter = Broker(blocking, broker.settings)
    owner = redis_cluster.owner_of(broker.settings.prefix)
    try:
        before = blocked_clients(owner)
        woken = asyncio.create_task(waiter.wait_for_work(["sim", "other"], timeout=10))
        await wait_until(
            lambda: blocked_clients(owner) > before,
            timeout=5,
            message="the waiter blocks on the pool's primary",
        )
        await broker.submit(job(id="j"))
        hops = await asyncio.wait_for(woken, timeout=5)
        assert isinstance(hops, int)
        assert isinstance(await waiter.claim("w", caps(), hops=hops), Claim)
    finally:
        await blocking.aclose()


async def test_a_worker_wakes_on_its_own_doorbell(redis_cluster: Cluster, broker: Broker) -> None:
    """The worker's own doorbell is a key of the pool: one BLPOP covers it and the services'
    doorbells on one node (keys of several slots would be refused: CROSSSLOT)."""
    blocking = connect(redis_cluster.settings(), blocking=True)
    waiter = Broker(blocking, broker.settings)
    owner = redis_cluster.owner_of(broker.settings.prefix)
    try:
        before = blocked_clients(owner)
        woken = asyncio.create_task(waiter.wait_for_work(["sim", "other"], 10, worker_id="w"))
        await wait_until(lambda: blocked_clients(owner) > before, timeout=5)
        await broker.redis.lpush(broker.keys.wake("w"), "0")
        assert await asyncio.wait_for(woken, timeout=5) == 0
    finally:
        await blocking.aclose()


async def test_a_job_handed_to_an_idle_worker_reaches_it_on_a_cluster(
    redis_cluster: Cluster, broker: Broker
) -> None:
    """A handoff (shared/lua/include/handoff.lua) touches only keys of the pool: the
    submission leases the job and pushes it onto the worker's doorbell, whose BLPOP returns
    it as a Claim."""
    handing = Broker(broker.redis, broker.settings, handoff=True)
    await handing.register_worker("w", caps())
    assert await handing.claim("w", caps()) == NoClaim("empty", None)
    blocking = connect(redis_cluster.settings(), blocking=True)
    try:
        waiter = Broker(blocking, broker.settings)
        woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="w"))
        await broker.submit(job(id="j"))
        claim = await asyncio.wait_for(woken, timeout=5)
        assert isinstance(claim, Claim)
        assert claim.job.id == "j"
        assert await handing.complete("w", "j", claim.token, None) == "ok"
    finally:
        await blocking.aclose()


async def test_fit_leaves_a_job_to_an_idle_smaller_worker_on_a_cluster(broker: Broker) -> None:
    """The idle-worker index and the doorbells are keys of the pool: the claim that leaves a
    job and rings a worker touches no key of another slot."""
    fit = Broker(broker.redis, dataclasses.replace(broker.settings, scheduling_policies=("fit",)))
    big = caps(hardware={"gpus": [{"memory_gb": 80}]})
    small = caps(hardware={"gpus": [{"memory_gb": 24}]})
    for worker_id, offer in (("big", big), ("small", small)):
        await fit.register_worker(worker_id, offer)
        assert await fit.claim(worker_id, offer) == NoClaim("empty", None)
    await fit.submit(job(id="j", requirements={"hardware": {"gpu": {"memory_gb": 8}}}))
    hops = await fit.wait_for_work(["sim"], 1, worker_id="big")  # the submission's doorbell
    assert not isinstance(hops, Claim)
    left = await fit.claim("big", big, hops=hops or 0)
    assert isinstance(left, NoClaim)
    assert await fit.wait_for_work(["sim"], 1, worker_id="small") == 0  # its own doorbell
    taken = await fit.claim("small", small)
    assert isinstance(taken, Claim)
    assert taken.job.id == "j"


async def test_a_worker_hears_its_cancel_on_the_control_channel(
    cluster_redis: RedisClient, broker: Broker
) -> None:
    """PUBLISH from a script on the pool's primary reaches a subscriber on whichever node
    redis-py chose: a cluster forwards every PUBLISH to every node."""
    subscription = Broker(cluster_redis, broker.settings).control_subscription("w1")
    await subscription.subscribe()
    messages = subscription.messages()
    try:
        await subscription.ping()
        assert await asyncio.wait_for(anext(messages), 5) is None  # the pong
        await broker.submit(job(id="j"))
        assert isinstance(await broker.claim("w1", caps()), Claim)
        assert (await broker.cancel("j")).outcome == "cancelled"
        assert await asyncio.wait_for(anext(messages), 5) == "cancel j"
    finally:
        await subscription.aclose()


async def test_the_event_stream_is_tailed_and_shared_out(broker: Broker) -> None:
    tail = broker.reads.event_stream()
    tail.open()
    group = EventGroup(broker.redis, broker.keys.events, "hubs", "hub-1")
    group.open()
    try:
        await group.ensure()
        start = await tail.newest_id()
        reading = asyncio.create_task(tail.read(start, count=10, block_ms=5000))
        await broker.submit(job(id="j"))
        entries = await asyncio.wait_for(reading, 10)
        assert [(f["type"], f["job"]) for _, f in entries] == [("accepted", "j")]
        shared = await group.read_new(count=10, block_ms=100)
        assert [f["job"] for _, f in shared] == ["j"]
        assert await group.ack([entry_id for entry_id, _ in shared]) == 1
        assert await group.pending_count() == 0
    finally:
        await tail.close()
        await group.close()


async def test_a_worker_serving_two_pools_on_two_primaries(
    redis_cluster: Cluster,
    cluster_redis: RedisClient,
    broker_settings: BrokerSettings,
) -> None:
    """A worker link with POOLS=p1,p2 (worker/links.py) on a cluster: the pools' keys are on
    two primaries, so it waits with one BLPOP per pool, and its one subscription spans the
    control channels of both (SUBSCRIBE takes channels of any slot: PUBLISH is broadcast)."""
    settings = dataclasses.replace(
        broker_settings, prefix=f"t{uuid.uuid4().hex[:12]}:", pools=("p1", "p2")
    )
    hub = PoolSet(cluster_redis, settings)
    slots = [slot_of(broker.keys.prefix) for broker in hub]
    assert redis_cluster.owner(slots[0]) is not redis_cluster.owner(slots[1])
    link = RedisLink(redis_cluster.settings(), settings, "w1")
    cancelled: list[str] = []
    control = asyncio.create_task(link.run_control(cancelled.append))
    try:
        woken = asyncio.create_task(link.waiter.wait_for_work(["sim"], timeout=10))
        submitted = await hub.brokers["p2"].submit(job(id="j2"))
        assert await asyncio.wait_for(woken, 5) is not None
        await hub.brokers["p1"].submit(job(id="j1"))
        claimed = []
        while isinstance(claim := await link.broker.claim("w1", caps()), Claim):
            claimed.append(claim.job.id)
        assert sorted(claimed) == sorted([submitted.job_id, "p1!j1"])
        channels = [broker.keys.control("w1") for broker in hub]

        def subscribed() -> bool:
            # Counted on each node: a subscriber is known only to the node it is on.
            return all(redis_cluster.subscribers(channel) > 0 for channel in channels)

        await wait_until(subscribed, timeout=5, message="the worker listens in both pools")
        for job_id in claimed:
            owner = hub.for_job(job_id)
            assert owner is not None
            assert (await owner.cancel(job_id)).outcome == "cancelled"
        await wait_until(lambda: len(cancelled) == 2, timeout=5, message="both cancels heard")
        assert sorted(cancelled) == sorted(claimed)
    finally:
        control.cancel()
        await asyncio.gather(control, return_exceptions=True)
        await link.aclose()


async def test_reads_transactions_and_the_clock_work_within_a_pool(broker: Broker) -> None:
    """The read model's pipelines touch one pool's keys (one slot); the gateway grants'
    MULTI/EXEC too; TIME goes to any node."""
    await broker.register_worker("w1", caps())
    await broker.submit_many([job(id="a"), job(id="b", priority=90)])
    claim = await broker.claim("w1", caps())
    assert isinstance(claim, Claim)
    reads = broker.reads
    assert await reads.jobs.counts() == {
        "pending": 1, "active": 1, "completed": 0, "failed": 0, "cancelled": 0
    }  # fmt: skip
    assert await reads.jobs.heads({"pending": 5, "active": 5}) == {
        "pending": ["a"],
        "active": ["b"],
    }
    summaries = await reads.jobs.summaries(["a", "b", "gone"])
    assert [s.id if s else None for s in summaries] == ["a", "b", None]
    pending = await reads.jobs.pending_counts([(0, 2**53)], max_classes=10)
    assert pending.total == 1
    assert [w.id for w in await reads.fleet.live()] == ["w1"]
    found = await reads.fleet.worker("w1")
    assert found is not None
    assert [lease.job_id for lease in found.leases] == ["b"]
    assert abs(await reads.now_ms() - await reads.now_ms()) < 1000
    assert await broker.owners(["a", "gone"]) == [await broker.owner("a"), None]
    grants = GrantStore(broker.redis, broker.keys)
    await grants.issue(Grant(worker_id="gw-1", services=["sim"]))
    token, _ = await grants.issue(Grant(worker_id="gw-1", services=["sim", "other"]))
    found_grant = await grants.lookup(token)
    assert found_grant is not None
    assert found_grant.services == ["sim", "other"]
    assert await grants.revoke("gw-1")
    assert await grants.grants() == []


async def test_dropped_connections_come_back_on_the_next_command(broker: Broker) -> None:
    """A silent link's remedy (the worker's reset_waiter, the event reader's timeout)."""
    await broker.submit(job(id="j"))
    await drop_connections(broker.redis)
    assert await broker.pending_count() == 1


# -- scripts: NOSCRIPT, WAIT -----------------------------------------------------------------


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_flushed_library_is_loaded_again_on_the_pools_primary_only(
    redis_cluster: Cluster, cluster_redis: RedisClient, broker: Broker, wait_replicas: int
) -> None:
    """A restart without persistence loses the library. After "Function not found" it is
    loaded where it is missing, not on every primary: one that is down must not stop the
    pools of the others."""
    broker = Broker(
        cluster_redis, dataclasses.replace(broker.settings, wait_replicas=wait_replicas)
    )
    owner = redis_cluster.owner_of(broker.settings.prefix)
    primaries = redis_cluster.primaries()
    for node in primaries:
        with node.client() as direct:
            direct.function_flush()
            direct.config_resetstat()
    await run_a_job(broker, "j")
    for node in primaries:
        with node.client() as direct:
            loaded = bool(direct.function_list(library=library_name()))
            assert loaded == (node is owner), node.name
            if node is not owner:
                assert script_call_stats(direct.info("commandstats"))[0] == 0, node.name
    with owner.client() as direct:
        stats = direct.info("commandstats")
    assert int(stats.get("cmdstat_fcall", {}).get("calls", 0)) >= 3  # submit, claim, complete
    assert "cmdstat_evalsha" not in stats


async def test_a_script_call_is_routed_by_its_key_without_asking_a_node_for_it(
    redis_cluster: Cluster, broker: Broker
) -> None:
    """redis-py finds an FCALL's keys in the command's key specs; older versions asked a
    node `COMMAND GETKEYS` before each one, a round trip more per call."""
    await run_a_job(broker, "warm-up")
    before = [getkeys_calls(node) for node in redis_cluster.primaries()]
    for i in range(5):
        await run_a_job(broker, f"j{i}")
    assert [getkeys_calls(node) for node in redis_cluster.primaries()] == before


def getkeys_calls(node: Server) -> int:
    with node.client() as direct:
        stats = direct.info("commandstats")
    return int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))


async def test_pruning_deletes_other_versions_libraries_on_every_primary(
    redis_cluster: Cluster, broker: Broker
) -> None:
    await run_a_job(broker, "j")
    old = "emp_00000000000000bb"
    for node in redis_cluster.primaries():
        with node.client() as direct:
            direct.function_load(
                f"#!lua name={old}\nredis.register_function('{old}_f', function() return 1 end)",
                replace=True,
            )
    assert await broker.prune_libraries() == [old]
    for node in redis_cluster.primaries():
        with node.client() as direct:
            assert not direct.function_list(library=old), node.name
    owner = redis_cluster.owner_of(broker.settings.prefix)
    with owner.client() as direct:
        assert direct.function_list(library=library_name())


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_user_without_fcall_sends_scripts_and_they_are_reloaded_where_flushed(
    redis_cluster: Cluster, broker: Broker, wait_replicas: int
) -> None:
    """The EVALSHA fallback on a cluster (an ACL of older releases, on every node): after
    NOSCRIPT the script is loaded on the pool's primary only."""
    nodes = [node for node in redis_cluster.nodes if node.alive]
    for node in nodes:
        with node.client() as direct:
            direct.acl_setuser(
                "limited", enabled=True, reset=True, passwords=["+pw"], keys=["*"],
                channels=["*"], commands=["+@all", "-fcall"],
            )  # fmt: skip
            direct.script_flush()
    url = (redis_cluster.settings().url or "").replace("redis://", "redis://limited:pw@")
    client = connect(dataclasses.replace(redis_cluster.settings(), url=url))
    try:
        broker = Broker(client, dataclasses.replace(broker.settings, wait_replicas=wait_replicas))
        await run_a_job(broker, "j")
    finally:
        await client.aclose()
        for node in nodes:
            with node.client() as direct:
                direct.acl_deluser("limited")
    owner = redis_cluster.owner_of(broker.settings.prefix)
    sha = hashlib.sha1(source("submit").encode()).hexdigest()
    for node in redis_cluster.primaries():
        with node.client() as direct:
            assert direct.script_exists(sha) == [node is owner], node.name


async def test_with_wait_replicas_a_change_is_on_the_replica_when_the_call_returns(
    redis_cluster: Cluster, cluster_redis: RedisClient, broker: Broker
) -> None:
    waiting = Broker(
        cluster_redis,
        dataclasses.replace(broker.settings, wait_replicas=1, wait_timeout_ms=WAIT_MS),
    )
    replica = redis_cluster.replica_of(redis_cluster.owner_of(broker.settings.prefix))
    with replica.client() as direct:
        direct.execute_command("READONLY")  # a cluster replica serves reads only when asked
        for n in range(20):
            submitted = await waiting.submit(job(id=f"j{n}"))
            assert submitted.created
            assert direct.hget(waiting.keys.job(f"j{n}"), "status") == b"pending"
        claim = await waiting.claim("w", caps())
        assert isinstance(claim, Claim)
        assert direct.hget(waiting.keys.job(claim.job.id), "worker_id") == b"w"


async def test_wait_counts_the_replicas_of_the_pools_own_primary(
    redis_cluster: Cluster, cluster_redis: RedisClient, broker: Broker
) -> None:
    """WAIT runs on the connection that ran the script, on the pool's primary: a frozen
    replica of another primary changes nothing; the pool's own frozen replica makes the
    change unacknowledged (NotReplicated). Sent to any other node, or on another
    connection, WAIT would have nothing to wait for and answer at once."""
    waiting = Broker(
        cluster_redis, dataclasses.replace(broker.settings, wait_replicas=1, wait_timeout_ms=300)
    )
    owner = redis_cluster.owner_of(broker.settings.prefix)
    other = next(node for node in redis_cluster.primaries() if node is not owner)
    await waiting.submit(job(id="warm-up"))  # scripts loaded, connections open
    with frozen(redis_cluster.replica_of(other)):
        assert (await waiting.submit(job(id="fine"))).created
    with frozen(redis_cluster.replica_of(owner)), pytest.raises(NotReplicated) as raised:
        await waiting.submit(job(id="unacknowledged"))
    assert raised.value.acked == 0
    stored = await waiting.get("unacknowledged")
    assert stored is not None  # on the primary: WAIT cannot undo a write
    assert stored.status == JobStatus.PENDING


async def test_an_acknowledged_job_survives_its_primarys_crash(
    redis_cluster: Cluster, cluster_redis: RedisClient, broker: Broker
) -> None:
    """REDIS_WAIT_REPLICAS=1 on a cluster: what the caller was told is submitted is on the
    replica, and the replica takes over when the primary dies. The same client carries on:
    it finds the new primary from the nodes still up. Waiting for a replica works again
    once the old primary is back, as the new one's replica."""
    waiting = Broker(
        cluster_redis,
        dataclasses.replace(broker.settings, wait_replicas=1, wait_timeout_ms=WAIT_MS),
    )
    submitted = [f"j{n}" for n in range(30)]
    await waiting.submit_many([job(id=job_id) for job_id in submitted])
    owner = redis_cluster.owner_of(broker.settings.prefix)
    replica = redis_cluster.replica_of(owner)
    redis_cluster.kill_primary(owner)
    assert redis_cluster.wait_takeover(owner, replica) is replica
    assert redis_cluster.owner_of(broker.settings.prefix) is replica
    # The new primary has no replica until the old one is back: claims do not wait.
    claimed = []
    while isinstance(claim := await broker.claim("w", caps()), Claim):
        claimed.append(claim.job.id)
        assert await broker.complete("w", claim.job.id, claim.token, None) == "ok"
    assert claimed == submitted
    redis_cluster.restore()
    assert redis_cluster.replica_of(replica) is owner
    await run_a_job(waiting, "after")


# -- a pool's slot moves to another primary while it is in use ----------------------------


@dataclasses.dataclass
class Load:
    """Submitters and workers on one pool, each with a cluster client of its own."""

    submitted: list[str] = dataclasses.field(default_factory=list)
    completed: list[str] = dataclasses.field(default_factory=list)
    submitting: bool = True


@contextlib.asynccontextmanager
async def clients(cluster: Cluster, count: int) -> AsyncIterator[list[RedisClient]]:
    made = [connect(cluster.settings()) for _ in range(count)]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_pool_keeps_working_while_its_slot_moves_to_another_primary(
    redis_cluster: Cluster, broker: Broker, wait_replicas: int
) -> None:
    """Two submitters and three workers run on one pool while its slot (every key, in one
    step: Cluster.move_slot) moves to another primary. No call fails, and every job
    submitted is completed exactly once. The old primary's MOVED (and possibly ASK)
    replies show the calls were redirected, not merely lucky."""
    settings = dataclasses.replace(
        broker.settings, wait_replicas=wait_replicas, wait_timeout_ms=WAIT_MS
    )
    slot = slot_of(settings.prefix)
    source_node = redis_cluster.owner(slot)
    target = next(node for node in redis_cluster.primaries() if node is not source_node)
    moved_before = errorstat(source_node, "MOVED")
    load = Load()

    async def submitter(client: RedisClient, name: str) -> None:
        own = Broker(client, settings)
        n = 0
        while load.submitting:
            batch = [f"{name}-{n + i}" for i in range(5)]
            await own.submit_many([job(id=job_id) for job_id in batch])
            load.submitted += batch
            n += len(batch)

    async def worker(client: RedisClient, name: str) -> None:
        own = Broker(client, settings)
        while load.submitting or len(load.completed) < len(load.submitted):
            claim = await own.claim(name, caps())
            if not isinstance(claim, Claim):
                await asyncio.sleep(0.005)
                continue
            assert await own.complete(name, claim.job.id, claim.token, None) == "ok"
            load.completed.append(claim.job.id)

    async with clients(redis_cluster, 5) as (s1, s2, w1, w2, w3):
        running = [
            asyncio.create_task(submitter(s1, "a")),
            asyncio.create_task(submitter(s2, "b")),
            asyncio.create_task(worker(w1, "w1")),
            asyncio.create_task(worker(w2, "w2")),
            asyncio.create_task(worker(w3, "w3")),
        ]

        async def completed(count: int, what: str) -> None:
            # A task that failed ends the wait at once: its error is the test's failure.
            await wait_until(
                lambda: len(load.completed) >= count or any(t.done() for t in running),
                timeout=20,
                message=what,
            )
            for task in running:
                if task.done():
                    task.result()

        try:
            await completed(100, "100 jobs completed before the move")
            await asyncio.to_thread(redis_cluster.move_slot, slot, target)
            await completed(len(load.completed) + 100, "100 more after it")
            load.submitting = False
            await asyncio.wait_for(asyncio.gather(*running), timeout=30)
        finally:
            load.submitting = False
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        check = Broker(w1, settings)
        assert await check.pending_count() == 0
        finished = await check.get_many(load.submitted)
        assert {j.status for j in finished} == {JobStatus.COMPLETED}
    assert redis_cluster.owner(slot) is target
    assert len(load.submitted) >= 200
    assert Counter(load.completed) == Counter(load.submitted)
    assert set(Counter(load.completed).values()) == {1}
    assert errorstat(source_node, "MOVED") > moved_before


async def test_a_cluster_over_tls(
    tls_cluster: TlsCluster, cluster_prefix: str, broker_settings: BrokerSettings
) -> None:
    """rediss:// and the TLS settings reach every node: the seed, the nodes it names, the
    blocking clients made from the same settings; WAIT runs over TLS too."""
    client = connect(tls_cluster.settings())
    settings = dataclasses.replace(
        broker_settings, prefix=cluster_prefix, wait_replicas=1, wait_timeout_ms=WAIT_MS
    )
    broker = Broker(client, settings)
    waiter = Broker(connect(tls_cluster.settings(), blocking=True), settings)
    try:
        await broker.submit(job(id="j"))
        assert await waiter.wait_for_work(["sim"], timeout=5) is not None
        claim = await waiter.claim("w", caps())
        assert isinstance(claim, Claim)
        assert await broker.complete("w", "j", claim.token, {"ok": True}) == "ok"
        stream = broker.reads.event_stream()
        stream.open()
        try:
            entries = await stream.read("0-0", count=10, block_ms=10)
        finally:
            await stream.close()
        assert [f["type"] for _, f in entries] == ["accepted", "claimed", "completed"]
    finally:
        await client.aclose()
        await waiter.redis.aclose()
