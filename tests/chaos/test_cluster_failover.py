"""The chaos matrix, Redis Cluster: a primary of a three-primary cluster is SIGKILLed under a
steady stream of submissions to three pools, one pool per primary; its replica takes over by
itself, and the hub and the workers follow it without a restart, while the other pools go
on. The test's docstring says what it does ("Does:") and what it proves ("Asserts:") for
RELIABILITY.md (see scripts/reliability.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from shared.pools import pool_of, pooled_id
from tests.chaos.clients import Submitter, sim_job, wait_all_finished
from tests.chaos.support import ClusterChaos, JobEvent, stream_order
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# Each worker serves two of the three pools (indexes into the fixture's pools), so every
# pool has two workers and the killed pool's workers serve a live pool too.
WORKERS = {"w1": (0, 1), "w2": (1, 2), "w3": (2, 0)}
SLOTS = 2  # CONCURRENT_JOBS of each worker
RATE_PER_POOL = 20.0  # submissions per second to each pool: a steady stream, not a burst
LANES_PER_POOL = 2  # a lane waits on its own pool only: a dead pool holds up no other
WARMUP = 40  # acknowledgements in every pool before the kill
AFTER = 40  # acknowledgements in the killed pool once it has a replica again
WAIT = {"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "1000"}


@dataclass
class PoolStream:
    """A steady stream of short jobs to every pool, RATE_PER_POOL per second each over
    LANES_PER_POOL lanes of its own, each job retried until the hub acknowledges it, until
    `stop` is set. `ids` holds each pool's job ids as stored (`pool!id`)."""

    submitter: Submitter
    pools: list[str]
    ids: dict[str, list[str]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        interval = LANES_PER_POOL / RATE_PER_POOL

        async def lane(pool: str) -> None:
            ids = self.ids.setdefault(pool, [])
            while not self.stop.is_set():
                started = time.monotonic()
                job = sim_job(f"cf-{len(ids):05d}", steps=2, step_ms=10, pool=pool)
                ids.append(pooled_id(pool, str(job["id"])))
                await self.submitter.submit(job, timeout=60)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

        await asyncio.gather(*(lane(p) for p in self.pools for _ in range(LANES_PER_POOL)))

    def all_ids(self) -> list[str]:
        return [job_id for ids in self.ids.values() for job_id in ids]


def acked_in(submitter: Submitter, pool: str, since: float = 0.0) -> int:
    """Acknowledgements of `pool`'s jobs that arrived after `since` (time.time())."""
    return sum(1 for j, at in submitter.acked_at.items() if pool_of(j) == pool and at > since)


def claims_of(events: dict[str, list[JobEvent]], pool: str) -> list[float]:
    """When (time.time(), from the stream entry ids) each claim of `pool`'s jobs was made."""
    return [
        e.ts_ms / 1000 for job_id, e in stream_order(events, "claimed") if pool_of(job_id) == pool
    ]


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest stretch of [start, end] without any of `times`: (its length, its start)."""
    marks = [start, *sorted(t for t in times if start < t < end), end]
    return max((b - a, a) for a, b in itertools.pairwise(marks))


async def registered(chaos: ClusterChaos, served: dict[str, list[str]]) -> None:
    """Until every worker is registered in each pool it serves."""

    async def check() -> bool:
        for worker_id, pools in served.items():
            for pool in pools:
                if await chaos.redis.zscore(chaos.pools[pool].keys.workers, worker_id) is None:
                    return False
        return True

    await wait_until(check, timeout=30, interval=0.05, message="every worker in its pools")


# About 15 s on the 2-core box: the cluster and the processes start (4 s), warm-up (2 s),
# the cluster's own failure detection and election (node timeout 3 s: 4.5-6 s after the
# kill), the rejoin, and the killed pool's catch-up (2 s).
@pytest.mark.timeout(120)
async def test_cluster_failover(cluster_chaos: ClusterChaos) -> None:
    """Does: a Redis Cluster of three primaries with one replica each (node timeout 3000 ms),
    a hub and 3 workers (2 slots each) with REDIS_CLUSTER=true, REDIS_WAIT_REPLICAS=1 and
    the URL of one node; three pools whose hash tags put them on three different primaries,
    each worker serving two of them. Clients submit a steady stream of short jobs to every
    pool over REST (the `pool` field), 20 per second per pool, retrying unacknowledged ones
    with the same job id. After 40 acknowledgements in every pool, the primary of the pool
    on the node every process was given as its URL is killed with SIGKILL; the cluster
    detects the failure and elects its replica by itself (no CLUSTER FAILOVER), then the
    killed node is started again, empty, and rejoins as the new primary's replica (with
    WAIT=1 the pool acknowledges nothing until it has a replica again). The stream goes on
    until the killed pool has 40 more acknowledgements. Printed: the time from the kill to
    the takeover, to the first acknowledged submission and to the first claim in the killed
    pool; the other pools' acknowledgements and claims while the killed pool had no
    primary, and their longest pause (the cluster refuses every slot between calling the
    node failed and electing its replica: `cluster-require-full-coverage yes`, the
    default); each worker's claims in the live pools meanwhile.

    Asserts: no acknowledged submission is lost and none completes twice, in any pool
    (every job completes exactly once); the hub and the workers reach the new primary
    without a restart (submissions to the killed pool are acknowledged, and its jobs
    claimed, after the takeover); the other pools keep flowing while the killed pool has no
    primary: each has acknowledgements and claims between the kill and the takeover, and
    every worker, those that also serve the killed pool included, claims jobs of a live
    pool meanwhile."""
    chaos = cluster_chaos
    pools = list(chaos.pools)
    # The pool on the node every process was given as REDIS_URL: the harder case, as each
    # process must find the slot map elsewhere from then on.
    victim = next(p for p in pools if chaos.primary_of(p) is chaos.servers.seed())
    served = {w: [pools[i] for i in indexes] for w, indexes in WORKERS.items()}

    hub = await chaos.start_hub(**WAIT)
    for worker_id, its_pools in served.items():
        chaos.start_worker(worker_id, CONCURRENT_JOBS=str(SLOTS), POOLS=",".join(its_pools), **WAIT)
    await registered(chaos, served)
    submitter = Submitter([hub.url])
    stream = PoolStream(submitter, pools)
    load = asyncio.create_task(stream.run())
    try:
        await wait_until(
            lambda: all(acked_in(submitter, p) >= WARMUP for p in pools) or load.done(),
            timeout=60,
            interval=0.05,
            message=f"{WARMUP} acknowledgements in every pool",
        )
        assert not load.done(), "the stream stopped by itself"
        # The cluster helpers are synchronous: off the loop, which runs the stream.
        old = await asyncio.to_thread(chaos.primary_of, victim)
        replica = await asyncio.to_thread(chaos.servers.replica_of, old)
        acked_at_kill = len(submitter.acked)
        await asyncio.to_thread(chaos.servers.kill_primary, old)
        # Taken once the process is gone: anything stamped later is the new primary's.
        killed = time.time()
        await asyncio.to_thread(chaos.servers.wait_takeover, old, replica, 30, force=False)
        took_over = time.time()
        assert await asyncio.to_thread(chaos.primary_of, victim) is replica
        # Back to one replica (with WAIT=1 the pool acknowledges nothing without one).
        await asyncio.to_thread(chaos.servers.restore)
        rejoined = time.time()
        await wait_until(
            lambda: acked_in(submitter, victim, rejoined) >= AFTER or load.done(),
            timeout=60,
            interval=0.05,
            message=f"{AFTER} acknowledgements in {victim} after the rejoin",
        )
        assert not load.done(), "the stream stopped by itself"
        stream.stop.set()
        await load
        ids = stream.all_ids()
        await wait_all_finished(chaos, ids, timeout=60)
    finally:
        stream.stop.set()
        if not load.done():
            load.cancel()
        await submitter.close()

    events = await chaos.events()
    accounting = await chaos.account(submitter.acked, events=events)
    seen = Seen(submitter, events, pools, victim, killed, took_over, rejoined)
    chaos.report(
        accounting,
        wait_replicas=1,
        pools=len(pools),
        acked_at_kill=acked_at_kill,
        kill_to_takeover_s=took_over - killed,
        takeover_to_rejoined_s=rejoined - took_over,
        kill_to_first_submission_s=seen.first_submission_s(),
        kill_to_first_claim_s=seen.first_claim_s(),
        other_pools_acks_in_outage=seen.per_pool(seen.acks_in_outage),
        other_pools_claims_in_outage=seen.per_pool(seen.claims_in_outage),
        other_pools_longest_pause_s=seen.longest_pause()[0],
        longest_pause_from_kill_s=seen.longest_pause()[1],
        worker_claims_in_outage=seen.per_worker(seen.worker_claims()),
        victim_jobs_held_at_kill=seen.per_worker(seen.held_at_kill()),
        retried_submissions=sum(submitter.failures.values()),
        replayed_200=len(submitter.replayed),
        jobs_run_twice=sum(
            1 for evs in events.values() if sum(e.type == "claimed" for e in evs) > 1
        ),
    )
    accounting.check()
    assert accounting.submitted == len(set(submitter.acked)) == len(ids)
    assert accounting.completed == accounting.submitted
    # Stamped after the kill means by the new primary: the pool had no other until then.
    assert seen.first_submission_s() != "-", f"nothing sent to {victim} after the kill acked"
    assert seen.first_claim_s() != "-", f"no job of {victim} claimed after the kill"
    for counts in (seen.acks_in_outage(), seen.claims_in_outage()):
        assert all(counts.values()), f"a live pool stopped in the outage: {counts}"
    # A job of the killed pool that a worker held at the kill keeps its slot until its
    # report reaches the pool again (after the takeover): a worker whose every slot was
    # taken so had nothing to claim with. Every other one claims in its live pool.
    free = [w for w, held in seen.held_at_kill().items() if held < SLOTS]
    stopped = [w for w in free if not seen.worker_claims()[w]]
    assert not stopped, f"workers with a free slot claimed nothing in the outage: {stopped}"


@dataclass
class Seen:
    """What the clients and the event streams saw around the kill (times: time.time())."""

    submitter: Submitter
    events: dict[str, list[JobEvent]]
    pools: list[str]
    victim: str
    killed: float
    took_over: float
    rejoined: float

    @property
    def others(self) -> list[str]:
        return [p for p in self.pools if p != self.victim]

    def per_pool(self, count: Callable[[], dict[str, int]]) -> str:
        counts = count()
        return "/".join(str(counts[p]) for p in self.others)

    def first_submission_s(self) -> float | str:
        """From the kill to the first acknowledgement of a submission to the killed pool sent
        after it ("-": none)."""
        acked = self.submitter.acked_at
        after = [
            at - self.killed
            for j, at in acked.items()
            if pool_of(j) == self.victim and self.submitter.sent_at[j] > self.killed
        ]
        return min(after, default="-")

    def first_claim_s(self) -> float | str:
        claims = claims_of(self.events, self.victim)
        return min((t - self.killed for t in claims if t > self.killed), default="-")

    def in_outage(self, at: float) -> bool:
        """Between the kill and the takeover: while the killed pool had no primary."""
        return self.killed < at < self.took_over

    def acks_in_outage(self) -> dict[str, int]:
        acked = self.submitter.acked_at
        return {
            p: sum(1 for j, at in acked.items() if pool_of(j) == p and self.in_outage(at))
            for p in self.others
        }

    def claims_in_outage(self) -> dict[str, int]:
        return {p: sum(map(self.in_outage, claims_of(self.events, p))) for p in self.others}

    def per_worker(self, counts: dict[str, int]) -> str:
        return "/".join(f"{w}:{counts[w]}" for w in WORKERS)

    def held_at_kill(self) -> dict[str, int]:
        """How many jobs of the killed pool each worker held at the kill: the last claim of
        the job before the kill was this worker's, and nothing but progress followed it."""
        held = dict.fromkeys(WORKERS, 0)
        for job_id, evs in self.events.items():
            before = [e for e in evs if e.ts_ms / 1000 < self.killed]
            claims = [n for n, e in enumerate(before) if e.type == "claimed"]
            if pool_of(job_id) != self.victim or not claims:
                continue
            if all(e.type == "progress" for e in before[claims[-1] + 1 :]):
                held[str(before[claims[-1]].worker_id)] += 1
        return held

    def worker_claims(self) -> dict[str, int]:
        """Each worker's claims in the pools still up, during the outage: a worker serving
        the killed pool too goes on in its other pool (worker/pooled_broker.py)."""
        counts = dict.fromkeys(WORKERS, 0)
        for job_id, e in stream_order(self.events, "claimed"):
            live = pool_of(job_id) != self.victim and e.worker_id in counts
            if live and self.in_outage(e.ts_ms / 1000):
                counts[str(e.worker_id)] += 1
        return counts

    def longest_pause(self) -> tuple[float, float]:
        """The longest time any other pool went without an acknowledgement, from the kill
        until the killed node is back, and when (since the kill) that pause began."""
        acked = self.submitter.acked_at
        gap, began = max(
            longest_gap(
                [at for j, at in acked.items() if pool_of(j) == p], self.killed, self.rejoined
            )
            for p in self.others
        )
        return gap, began - self.killed
