"""Claim cost vs queue depth: does a claim stay cheap when most pending jobs cannot run here?

For each depth, 99% of the pending jobs need hardware the claiming worker lacks (spread over
20 requirement classes at random priorities, some above the matching jobs) and 1% match it
(2 classes). We time 1,000 claims client-side and read Redis's own time for each claim from
INFO commandstats, which excludes network and Python. After each claim (untimed) the job is
completed and a new matching job submitted, so every claim sees the same depth and the
worker holds one job at a time, as a real worker with one slot does.

The claims apply the scheduling policies a worker applies by default; SCHEDULING_POLICIES in
the environment names others (`none`: strict order), to compare their cost.
"""

from __future__ import annotations

import os
import random
import time

from redis.asyncio import Redis

from bench.common import median, percentile, private_redis, table
from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.scripts import script_call_stats
from shared.settings import BrokerSettings
from shared.validation import convert

CLAIMS = 1000


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


def _settings() -> BrokerSettings:
    """The defaults, but for SCHEDULING_POLICIES where the environment sets it."""
    policies = os.environ.get("SCHEDULING_POLICIES")
    if policies is None:
        return BrokerSettings()
    return BrokerSettings(scheduling_policies=tuple(policies.split(",")))


async def run(quick: bool) -> str:
    depths = [1_000, 10_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    offer = convert(
        {"services": ["sim"], "hardware": {"gpus": [{"memory_gb": 24, "name": "RTX 4090"}]}},
        Capabilities,
    )
    rows = []
    for depth in depths:
        async with private_redis() as (_, redis):
            broker = Broker(redis, _settings())
            started = time.perf_counter()
            await _fill(broker, depth)
            fill_s = time.perf_counter() - started
            latencies, server = [], []
            refill = _requests(CLAIMS * 100, random.Random(0))[::100]
            for replacement in refill:
                before = await _script_usec(redis)
                t0 = time.perf_counter()
                got = await broker.claim("bench-worker", offer)
                latencies.append((time.perf_counter() - t0) * 1000)
                server.append(await _script_usec(redis) - before)
                assert isinstance(got, Claim), got
                await broker.complete("bench-worker", got.job.id, got.token, None)
                await broker.submit(replacement)
            mem = (await redis.info("memory"))["used_memory"] / 2**20
            rows.append(
                [
                    depth,
                    len(latencies),
                    median(latencies),
                    percentile(latencies, 99),
                    median(server),
                    percentile(server, 99),
                    depth / fill_s,
                    mem,
                ]
            )
    return table(
        "claim: cost vs queue depth (1% of pending jobs match; target p99 < 2 ms)",
        [
            "pending",
            "claims",
            "p50 ms",
            "p99 ms",
            "redis p50 us",
            "redis p99 us",
            "fill jobs/s",
            "redis MiB",
        ],
        rows,
    )
