"""Scale-out: does the Redis load of N pools split evenly over N cluster primaries?

Two setups, the same work: `JOBS_PER_POOL` x 3 no-op jobs, drained by 3 worker processes
that each claim and complete as a worker's drain loop does (one `complete_and_claim`
script per job):

- **single**: one Redis, one pool, the 3 processes sharing it;
- **cluster**: a 3-primary Redis Cluster (tests/redis_servers.py, the cluster the tests
  use), 3 pools whose hash tags land on 3 different primaries, one process per pool.

Per primary we read INFO before and after the drain: the claims it served (evalsha calls),
its Redis time per claim (commandstats usec / calls: the script's own time, no network),
the CPU it used (used_cpu_user + used_cpu_sys) and each one's share of the total.

A 2-core machine cannot show three primaries' throughput end to end: the Python clients
saturate both cores first. So the end-to-end rate is printed for what it is, and the rows
that say what N primaries could serve are **computed** from the measured Redis time per
claim (one primary is one core: 1e6 / usec-per-claim claims per second), labelled so.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis

from bench.common import private_redis, table
from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.pools import DEFAULT_POOL
from shared.redis_client import connect
from shared.redis_settings import RedisSettings
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from shared.validation import convert
from tests.redis_servers import start_cluster

POOLS = 3
REQUEST = convert(
    {"service_type": "sim", "priority": 50, "payload": {}, "requirements": {}}, JobRequest
)
OFFER = convert({"services": ["sim"]}, Capabilities)
EVEN = 0.15  # each primary's share within +-15% of 1/N (the target)


@dataclass
class NodeLoad:
    name: str
    pools: list[str]
    claims: int = 0
    usec: float = 0.0
    cpu_s: float = 0.0


def _sample(port: int) -> tuple[int, float, float]:
    """(script calls, their usec, CPU seconds) of the server on `port`."""
    with SyncRedis(port=port) as client:
        stats: dict[str, Any] = client.info("commandstats")
        cpu: dict[str, Any] = client.info("cpu")
    calls, usec = script_call_stats(stats)
    return (
        calls,
        usec,
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    )


def _drain_process(url: str, cluster: bool, pool: str, worker_id: str) -> None:
    asyncio.run(_drain(RedisSettings(url=url, cluster=cluster), pool, worker_id))


async def _drain(settings: RedisSettings, pool: str, worker_id: str) -> None:
    """Claim and complete in `pool` until it is empty, as a one-slot worker drains."""
    client = connect(settings, max_connections=4)
    broker = Broker(client, BrokerSettings(pools=(pool,)), pool=pool)
    caps = Broker.encode_capabilities(OFFER)
    try:
        await broker.register_worker(worker_id, OFFER)
        result = await broker.claim(worker_id, caps)
        while isinstance(result, Claim):
            _, result = await broker.complete_and_claim(
                worker_id, result.job.id, result.token, None, caps
            )
            if not isinstance(result, Claim) and result.reason == "more":
                result = await broker.claim(worker_id, caps)
        await broker.deregister_worker(worker_id)
    finally:
        await client.aclose()


async def _fill(settings: RedisSettings, pools: list[str], jobs_per_pool: int) -> None:
    client = connect(settings)
    try:
        for pool in pools:
            broker = Broker(client, BrokerSettings(pools=(pool,)), pool=pool)
            for start in range(0, jobs_per_pool, 1000):
                await broker.submit_many([REQUEST] * min(1000, jobs_per_pool - start))
    finally:
        await client.aclose()


def _drain_all(url: str, cluster: bool, lanes: list[str]) -> float:
    """One process per entry of `lanes` (a pool name each); seconds until all are done."""
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_drain_process, args=(url, cluster, pool, f"scale-w{n}"))
        for n, pool in enumerate(lanes)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"a drain process exited with {proc.exitcode}")
    return time.perf_counter() - started


def _measure(
    nodes: dict[str, int], pools_of: dict[str, list[str]], run: Any
) -> tuple[list[NodeLoad], float]:
    before = {name: _sample(port) for name, port in nodes.items()}
    seconds = run()
    loads = []
    for name, port in nodes.items():
        calls, usec, cpu = _sample(port)
        first = before[name]
        loads.append(
            NodeLoad(
                name, pools_of.get(name, []), calls - first[0], usec - first[1], cpu - first[2]
            )
        )
    return loads, seconds


async def run(quick: bool) -> str:
    jobs_per_pool = 3_000 if quick else 20_000
    total = jobs_per_pool * POOLS
    rows: list[list[object]] = []
    shares: list[float] = []
    usec_per_claim: list[float] = []

    def add_rows(setup: str, loads: list[NodeLoad], seconds: float) -> None:
        claims = sum(load.claims for load in loads) or 1
        cpu = sum(load.cpu_s for load in loads) or 1.0
        for load in loads:
            per = load.usec / load.claims if load.claims else 0.0
            rows.append(
                [
                    setup,
                    load.name,
                    ",".join(load.pools) or "-",
                    load.claims,
                    round(100 * load.claims / claims, 1),
                    round(per, 1),
                    round(load.cpu_s, 2),
                    round(100 * load.cpu_s / cpu, 1),
                    round(total / seconds),
                ]
            )
            if load.claims:
                usec_per_claim.append(per)

    async with private_redis() as (url, _):
        settings = RedisSettings(url=url)
        await _fill(settings, [DEFAULT_POOL], total)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        loads, seconds = _measure(
            {"redis": port},
            {"redis": [DEFAULT_POOL]},
            lambda: _drain_all(url, False, [DEFAULT_POOL] * POOLS),
        )
        add_rows("single Redis, 1 pool", loads, seconds)
        single_usec = loads[0].usec / max(loads[0].claims, 1)

    with tempfile.TemporaryDirectory(prefix="emp-bench-cluster-") as tmp:
        cluster = start_cluster(Path(tmp), primaries=POOLS)
        try:
            placed = cluster.pools_on_distinct_primaries(POOLS)
            settings = cluster.settings()
            await _fill(settings, list(placed), jobs_per_pool)
            pools_of: dict[str, list[str]] = {}
            for pool, owner in placed.items():
                pools_of.setdefault(owner.name, []).append(pool)
            loads, seconds = _measure(
                {node.name: node.port for node in cluster.primaries()},
                pools_of,
                lambda: _drain_all(str(settings.url), True, list(placed)),
            )
            add_rows(f"cluster, {POOLS} primaries, {POOLS} pools", loads, seconds)
            cpu = sum(load.cpu_s for load in loads) or 1.0
            shares = [load.cpu_s / cpu for load in loads]
            cluster_usec = sum(load.usec for load in loads) / max(
                sum(load.claims for load in loads), 1
            )
        finally:
            cluster.stop()

    even = all(abs(share - 1 / POOLS) <= EVEN / POOLS for share in shares)
    measured = table(
        f"scale: Redis load per primary, {total:,} jobs drained by {POOLS} worker processes "
        f"(measured; target: each primary within +-15% of 1/{POOLS}: "
        f"{'met' if even else 'NOT met'})",
        [
            "setup",
            "primary",
            "pools",
            "claims",
            "claim share %",
            "redis us/claim",
            "redis CPU s",
            "CPU share %",
            "end-to-end claims/s",
        ],
        rows,
    )
    measured_on = (
        (1, "single Redis", single_usec),
        *((n, "cluster", cluster_usec) for n in (3, 6, 12)),
    )
    computed_rows = [
        [n, source, round(usec, 1), round(n * 1e6 / usec)] for n, source, usec in measured_on
    ]
    computed = table(
        "scale: claims/s N primaries can serve (COMPUTED from the measured Redis time per "
        "claim, one core per primary, pools spread evenly; not measured end to end)",
        ["primaries", "us/claim measured on", "redis us/claim", "claims/s (computed)"],
        computed_rows,
    )
    return f"{measured}\n\n{computed}"
