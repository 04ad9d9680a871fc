"""Claim cost vs queue depth: does a claim stay cheap when most pending jobs cannot run here?

For each depth, 99% of the pending jobs need hardware the claiming worker lacks (spread over
20 requirement classes at random priorities, some above the matching jobs) and 1% match it
(2 classes). We time 1,000 claims client-side and read Redis's own time for each claim from
INFO commandstats, which excludes network and Python. After each claim (untimed) the job is
completed and a new matching job submitted, so every claim sees the same depth and the
worker holds one job at a time, as a real worker with one slot does.

The claims apply the scheduling policies a worker applies by default; SCHEDULING_POLICIES in
the environment names others (`none`: strict order), to compare their cost.

Each claim is followed by one of the least claim (bench/lua/claim_floor.lua, loaded as its
own Function library beside the product's): the writes any claim must make for its job to be
leased, fenced, seen and returned, on the same data, with nothing else a claim does. Its
Redis time is the floor that the claim's is set against (`floor p50 us`, `x floor`),
measured in the same run, since both vary more between days than with the code.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from redis.asyncio import Redis

from bench.common import median, percentile, private_redis, table
from shared.broker import Broker, Claim
from shared.broker_replies import claim_reply
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.lua_source import function_library
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from shared.validation import convert

CLAIMS = 1000
FLOOR_LIBRARY = "bench_floor"
FLOOR_SCRIPT = Path(__file__).with_name("lua") / "claim_floor.lua"


def _requests(depth: int, rng: random.Random) -> list[JobRequest]:
    out = []
    for i in range(depth):
        if i % 100 == 0:  # 1%: a 24 GB worker can run these
            req = {"hardware": {"gpu": {"memory_gb": 8 + (i // 100) % 2 * 8}}}
            prio = rng.randint(0, 60)
        else:
            req = {"hardware": {"gpu": {"memory_gb": 40 + i % 20}}}
            prio = rng.randint(0, 100)
        body = {"service_type": "sim", "priority": prio, "requirements": req}
        out.append(convert(body, JobRequest))
    return out


async def _fill(broker: Broker, depth: int) -> None:
    rng = random.Random(depth)
    batch = 2000
    for start in range(0, depth, batch):
        await broker.submit_many(_requests(min(batch, depth - start), rng))


async def _script_usec(redis: Redis) -> float:
    return script_call_stats(await redis.info("commandstats"))[1]


async def load_floor(redis: Redis) -> str:
    """Load the least claim as its own Function library; returns its function's name."""
    text = function_library(FLOOR_LIBRARY, {"claim_floor": FLOOR_SCRIPT.read_text()})
    await redis.function_load(text, replace=True)
    return f"{FLOOR_LIBRARY}_claim_floor"


async def floor_claim(
    redis: Redis, function: str, broker: Broker, worker_id: str, caps: bytes
) -> Claim:
    """One least claim, by `worker_id`, against `broker`'s pool."""
    settings = broker.settings
    reply = await redis.fcall(
        function,
        1,
        broker.keys.pending,
        broker.keys.prefix,
        settings.events_max,
        settings.retention_ms,
        worker_id,
        caps,
    )
    claimed = claim_reply(reply)
    assert isinstance(claimed, Claim), claimed
    return claimed


async def _complete(broker: Broker, worker_id: str, claimed: Claim) -> None:
    outcome = await broker.complete(worker_id, claimed.job.id, claimed.token, None)
    assert outcome == "ok", outcome


def _settings() -> BrokerSettings:
    """The defaults, but for SCHEDULING_POLICIES where the environment sets it."""
    policies = os.environ.get("SCHEDULING_POLICIES")
    if policies is None:
        return BrokerSettings()
    return BrokerSettings(scheduling_policies=tuple(policies.split(",")))


OFFER = convert(
    {"services": ["sim"], "hardware": {"gpus": [{"memory_gb": 24, "name": "RTX 4090"}]}},
    Capabilities,
)
COLUMNS = [
    "pending",
    "claims",
    "p50 ms",
    "p99 ms",
    "redis p50 us",
    "redis p99 us",
    "floor p50 us",
    "x floor",
    "fill jobs/s",
    "redis MiB",
]


async def measure(depth: int, claims: int = CLAIMS) -> list[float]:
    """One row of the table: `claims` claims, each followed by a least claim, at `depth`
    pending jobs on a fresh private Redis. Every job either takes is completed ('ok')."""
    async with private_redis() as (_, redis):
        broker = Broker(redis, _settings())
        started = time.perf_counter()
        await _fill(broker, depth)
        fill_s = time.perf_counter() - started
        latencies, server, floor = [], [], []
        function = await load_floor(redis)
        encoded = broker.encode_capabilities(OFFER)
        refill = _requests(claims * 200, random.Random(0))[::100]
        for replacement, floor_replacement in zip(refill[::2], refill[1::2], strict=True):
            before = await _script_usec(redis)
            t0 = time.perf_counter()
            got = await broker.claim("bench-worker", OFFER)
            latencies.append((time.perf_counter() - t0) * 1000)
            server.append(await _script_usec(redis) - before)
            assert isinstance(got, Claim), got
            await _complete(broker, "bench-worker", got)
            await broker.submit(replacement)
            before = await _script_usec(redis)
            least = await floor_claim(redis, function, broker, "bench-floor", encoded)
            floor.append(await _script_usec(redis) - before)
            await _complete(broker, "bench-floor", least)
            await broker.submit(floor_replacement)
        mem = (await redis.info("memory"))["used_memory"] / 2**20
    return [
        depth,
        len(latencies),
        median(latencies),
        percentile(latencies, 99),
        median(server),
        percentile(server, 99),
        median(floor),
        median(server) / median(floor),
        depth / fill_s,
        mem,
    ]


async def run(quick: bool) -> str:
    depths = [1_000, 10_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    rows = [await measure(depth) for depth in depths]
    return table(
        "claim: cost vs queue depth (1% of pending jobs match; target p99 < 2 ms)",
        COLUMNS,
        rows,
    )
