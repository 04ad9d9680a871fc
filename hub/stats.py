"""Fleet statistics for GET /stats, the dashboard, /metrics and the legacy monitor feed.

Everything is read from the broker's indexes, through the read model (shared/reads.py),
with a fixed number of round trips:

- pending by priority band: ZCOUNT over score ranges. The queue score is
  (1000 - priority) * 2^43 + seq, so each band of effective priorities is one contiguous
  score range and needs no per-job read;
- pending by service: the requirement classes (`classes` hash) and their ZSETs;
- jobs by status: the cardinality of each index (finished ones within retention);
- throughput: the per-minute `stats:{minute}` counters the scripts maintain;
- wait and run percentiles: a sample of the most recently completed jobs.

Each pool keeps all of these under its own keys (shared/pools.py). The document covers a
selection of pools (all a hub serves, or one with `?pool=`): counts are summed, the
percentiles come from the pools' samples together, the workers are counted once each
(a worker registers in every pool it serves), and `pools` holds each pool's own figures.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from hub.fleet import merge_workers
from shared.job import ms_to_iso
from shared.job_reads import JobReads
from shared.reads import Reads
from shared.worker_view import WorkerView

SCORE_UNIT: Final = 2**43
# Bands of effective priority (higher runs first). 100+ is reachable only through tier,
# deadline urgency and aging bonuses.
BANDS: Final = (("urgent", 100, 1000), ("high", 75, 99), ("normal", 25, 74), ("low", 0, 24))
WINDOWS: Final = (1, 5, 15)
COUNTERS: Final = ("submitted", "claimed", "completed", "failed", "retried", "cancelled", "run_ms")
MAX_CLASSES: Final = 2000
SAMPLE: Final = 200


def band_scores(lo: int, hi: int) -> tuple[int, int]:
    """The inclusive score range of jobs whose effective priority is in lo..hi."""
    return (1000 - hi) * SCORE_UNIT, (1000 - lo + 1) * SCORE_UNIT - 1


def band_of(priority: int) -> str:
    for name, lo, hi in BANDS:
        if lo <= priority <= hi:
            return name
    return "low"


def percentiles(values: list[int]) -> dict[str, Any]:
    """Nearest-rank p50/p90/p99 of a sample (ms), with the sample size."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "samples": 0}
    ordered = sorted(values)

    def rank(p: float) -> int:
        index = max(0, min(len(ordered) - 1, -(-len(ordered) * p // 100) - 1))
        return ordered[int(index)]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "samples": len(ordered)}


async def pending_breakdown(jobs: JobReads) -> dict[str, Any]:
    counts = await jobs.pending_counts(
        [band_scores(lo, hi) for _, lo, hi in BANDS], max_classes=MAX_CLASSES
    )
    names = [name for name, _, _ in BANDS]
    by_service: dict[str, dict[str, Any]] = {}
    for cls in counts.by_class:
        entry = by_service.setdefault(
            cls.service, {"total": 0, "by_priority": dict.fromkeys(names, 0)}
        )
        for name, count in zip(names, cls.in_ranges, strict=True):
            entry["by_priority"][name] += count
            entry["total"] += count
    return {
        "total": counts.total,
        "claimable": counts.total - counts.backing_off,
        "backing_off": counts.backing_off,
        "by_priority": dict(zip(names, counts.in_ranges, strict=True)),
        "by_service": dict(sorted(by_service.items())),
        "classes": counts.classes,
        "truncated": counts.classes > MAX_CLASSES,
    }


async def throughput(jobs: JobReads, now_ms: int) -> dict[str, dict[str, int]]:
    """Counter sums over the last 1, 5 and 15 minute buckets (the current one included)."""
    minute = now_ms // 60_000
    buckets = await jobs.minute_counters(range(minute - max(WINDOWS) + 1, minute + 1))
    buckets.reverse()  # newest first
    out: dict[str, dict[str, int]] = {}
    for window in WINDOWS:
        sums: Counter[str] = Counter()
        for bucket in buckets[:window]:
            sums.update(bucket)
        out[f"{window}m"] = {name: sums.get(name, 0) for name in COUNTERS}
    return out


async def timing_samples(jobs: JobReads) -> tuple[list[int], list[int]]:
    """The waits and run times (ms) of the SAMPLE most recently completed jobs."""
    ids = await jobs.ids("completed", 0, SAMPLE)
    rows = await jobs.fields(ids, ("created_at", "claimed_at", "finished_at"))
    waits: list[int] = []
    runs: list[int] = []
    for created, claimed, finished in rows:
        if created and claimed:
            waits.append(max(0, int(claimed) - int(created)))
        if claimed and finished:
            runs.append(max(0, int(finished) - int(claimed)))
    return waits, runs


def worker_counts(workers: list[WorkerView]) -> dict[str, Any]:
    return {
        "total": len(workers),
        "by_status": dict(Counter(w.status for w in workers)),
        "by_state": dict(Counter(w.state for w in workers)),
        "busy": sum(1 for w in workers if w.busy),
    }


async def _pool_figures(reads: Reads, now: int) -> dict[str, Any]:
    waits, runs = await timing_samples(reads.jobs)
    return {
        "pending": await pending_breakdown(reads.jobs),
        "jobs": await reads.jobs.counts(),
        "throughput": await throughput(reads.jobs, now),
        "waits": waits,
        "runs": runs,
    }


def _sum_pending(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    names = [name for name, _, _ in BANDS]
    out: dict[str, Any] = {
        "total": 0,
        "claimable": 0,
        "backing_off": 0,
        "by_priority": dict.fromkeys(names, 0),
        "by_service": {},
        "classes": 0,
        "truncated": False,
    }
    for part in parts:
        for key in ("total", "claimable", "backing_off", "classes"):
            out[key] += part[key]
        out["truncated"] = out["truncated"] or part["truncated"]
        for name in names:
            out["by_priority"][name] += part["by_priority"][name]
        for service, entry in part["by_service"].items():
            mine = out["by_service"].setdefault(
                service, {"total": 0, "by_priority": dict.fromkeys(names, 0)}
            )
            mine["total"] += entry["total"]
            for name in names:
                mine["by_priority"][name] += entry["by_priority"][name]
    out["by_service"] = dict(sorted(out["by_service"].items()))
    return out


def _sum_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for part in parts:
        out.update(part)
    return dict(out)


async def compute_stats(
    pools: Mapping[str, Reads], workers: Mapping[str, list[WorkerView]]
) -> dict[str, Any]:
    """The /stats document over `pools` (each pool's read model by name, at least one).
    `workers`: each pool's live workers (the hub's FleetCache)."""
    names = list(pools)
    now = await pools[names[0]].now_ms()
    figures = dict(
        zip(
            names,
            await asyncio.gather(*(_pool_figures(pools[n], now) for n in names)),
            strict=True,
        )
    )
    per_pool: dict[str, Any] = {}
    for name, f in figures.items():
        per_pool[name] = {
            "pending": f["pending"],
            "jobs": f["jobs"],
            "throughput": f["throughput"],
            "wait_ms": percentiles(f["waits"]),
            "run_ms": percentiles(f["runs"]),
            "workers": worker_counts(workers.get(name, [])),
        }
    windows = [f"{w}m" for w in WINDOWS]
    return {
        "now": ms_to_iso(now),
        "pending": _sum_pending(f["pending"] for f in figures.values()),
        "jobs": _sum_counts(f["jobs"] for f in figures.values()),
        "throughput": {
            w: {c: sum(f["throughput"][w][c] for f in figures.values()) for c in COUNTERS}
            for w in windows
        },
        "wait_ms": percentiles([x for f in figures.values() for x in f["waits"]]),
        "run_ms": percentiles([x for f in figures.values() for x in f["runs"]]),
        "workers": worker_counts(merge_workers(workers.get(n, []) for n in names)),
        "pools": per_pool,
    }
