"""Reads that cover several pools: one reading order made of each pool's own.

Every pool keeps its own indexes (shared/pools.py), so a listing over pools is a merge: the
next entries of each pool's index, read with their scores, are put in the one order the
index has (pending by queue score, active by execution deadline, finished ones newest
first), pool order breaking ties. Queue scores are comparable across pools in their
priority part; within a priority each pool has its own submission sequence, so equal
priorities interleave the pools' queues rather than follow one global arrival order,
which no pool could know without a shared counter (the one thing pools exist to avoid).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.job import Job
from shared.job_reads import NEWEST_FIRST, JobReads


@dataclass(frozen=True, slots=True)
class Ref:
    """One entry of a merged index: its pool, its job id and its place in its pool's index
    (for pending jobs: its queue position, the number of its pool's jobs ahead of it)."""

    pool: str
    job_id: str
    index: int


def merge(status: str, per_pool: Mapping[str, Sequence[tuple[str, float]]]) -> list[Ref]:
    """Each pool's (id, score) entries of `status`, already in that pool's reading order,
    as one list in the index's reading order; pools are listed in `per_pool`'s order, which
    breaks ties."""
    keyed: list[tuple[float, int, int, Ref]] = []
    sign = -1.0 if status in NEWEST_FIRST else 1.0
    for rank, (pool, entries) in enumerate(per_pool.items()):
        for i, (job_id, score) in enumerate(entries):
            keyed.append((sign * score, rank, i, Ref(pool, job_id, i)))
    keyed.sort(key=lambda k: k[:3])
    return [k[3] for k in keyed]


async def summaries(pools: Mapping[str, JobReads], refs: Sequence[Ref]) -> list[Job | None]:
    """The summaries of `refs`, in their order: one pipelined read per pool involved."""
    by_pool: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        by_pool.setdefault(ref.pool, []).append(i)
    out: list[Job | None] = [None] * len(refs)
    names = list(by_pool)
    replies = await asyncio.gather(
        *(pools[name].summaries([refs[i].job_id for i in by_pool[name]]) for name in names)
    )
    for name, jobs in zip(names, replies, strict=True):
        for i, job in zip(by_pool[name], jobs, strict=True):
            out[i] = job
    return out


async def heads(pools: Mapping[str, JobReads], counts: Mapping[str, int]) -> dict[str, list[Ref]]:
    """The first `counts[status]` entries of each status index over all `pools`, merged."""
    replies = await asyncio.gather(*(reads.scored_heads(counts) for reads in pools.values()))
    per_pool = dict(zip(pools, replies, strict=True))
    return {
        status: merge(status, {pool: heads[status] for pool, heads in per_pool.items()})[:count]
        for status, count in counts.items()
    }
