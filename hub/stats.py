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
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

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


async def timings(jobs: JobReads) -> dict[str, dict[str, Any]]:
    ids = await jobs.ids("completed", 0, SAMPLE)
    rows = await jobs.fields(ids, ("created_at", "claimed_at", "finished_at"))
    waits: list[int] = []
    runs: list[int] = []
    for created, claimed, finished in rows:
        if created and claimed:
            waits.append(max(0, int(claimed) - int(created)))
        if claimed and finished:
            runs.append(max(0, int(finished) - int(claimed)))
    return {"wait_ms": percentiles(waits), "run_ms": percentiles(runs)}


def worker_counts(workers: list[WorkerView]) -> dict[str, Any]:
    return {
        "total": len(workers),
        "by_status": dict(Counter(w.status for w in workers)),
        "by_state": dict(Counter(w.state for w in workers)),
        "busy": sum(1 for w in workers if w.busy),
    }


async def compute_stats(reads: Reads, workers: list[WorkerView] | None = None) -> dict[str, Any]:
    """The /stats document; `workers` may come from a FleetCache (read here when None)."""
    now = await reads.now_ms()
    if workers is None:
        workers = await reads.fleet.live()
    return {
        "now": ms_to_iso(now),
        "pending": await pending_breakdown(reads.jobs),
        "jobs": await reads.jobs.counts(),
        "throughput": await throughput(reads.jobs, now),
        **await timings(reads.jobs),
        "workers": worker_counts(workers),
    }
