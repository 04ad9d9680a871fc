"""Fleet statistics for GET /stats, the dashboard, /metrics and the legacy monitor feed.

Everything is read from the broker's indexes with a fixed number of round trips:

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

import orjson
from redis.asyncio import Redis

from hub.fleet import WorkerView, live_workers, redis_now_ms
from shared.job import ms_to_iso
from shared.keys import Keys

SCORE_UNIT: Final = 2**43
# Bands of effective priority (higher runs first). 100+ is reachable only through tier,
# deadline urgency and aging bonuses.
BANDS: Final = (("urgent", 100, 1000), ("high", 75, 99), ("normal", 25, 74), ("low", 0, 24))
WINDOWS: Final = (1, 5, 15)
COUNTERS: Final = ("submitted", "claimed", "completed", "failed", "retried", "cancelled", "run_ms")
MAX_CLASSES: Final = 2000
SAMPLE: Final = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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


async def pending_breakdown(redis: Redis, keys: Keys) -> dict[str, Any]:
    bands = [band_scores(lo, hi) for _, lo, hi in BANDS]
    raw_classes = await redis.hgetall(keys.classes)
    classes: list[tuple[str, str]] = []
    for class_id, doc in list(raw_classes.items())[:MAX_CLASSES]:
        try:
            service = str(orjson.loads(doc).get("s", "?"))
        except (orjson.JSONDecodeError, AttributeError):
            service = "?"
        classes.append((_text(class_id), service))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.pending)
        pipe.zcard(keys.delayed)
        for lo, hi in bands:
            pipe.zcount(keys.pending, lo, hi)
        for class_id, _ in classes:
            for lo, hi in bands:
                pipe.zcount(keys.job_class(class_id), lo, hi)
        replies = await pipe.execute()
    total, delayed = int(replies[0]), int(replies[1])
    names = [name for name, _, _ in BANDS]
    by_band = dict(zip(names, map(int, replies[2 : 2 + len(bands)]), strict=True))
    by_service: dict[str, dict[str, Any]] = {}
    offset = 2 + len(bands)
    for i, (_, service) in enumerate(classes):
        counts = replies[offset + i * len(bands) : offset + (i + 1) * len(bands)]
        entry = by_service.setdefault(service, {"total": 0, "by_priority": dict.fromkeys(names, 0)})
        for name, count in zip(names, counts, strict=True):
            entry["by_priority"][name] += int(count)
            entry["total"] += int(count)
    return {
        "total": total,
        "claimable": total - delayed,
        "backing_off": delayed,
        "by_priority": by_band,
        "by_service": dict(sorted(by_service.items())),
        "classes": len(raw_classes),
        "truncated": len(raw_classes) > MAX_CLASSES,
    }


async def throughput(redis: Redis, keys: Keys, now_ms: int) -> dict[str, dict[str, int]]:
    """Counter sums over the last 1, 5 and 15 minute buckets (the current one included)."""
    minute = now_ms // 60_000
    async with redis.pipeline(transaction=False) as pipe:
        for m in range(minute - max(WINDOWS) + 1, minute + 1):
            pipe.hgetall(keys.stats(m))
        buckets = await pipe.execute()
    buckets.reverse()  # newest first
    out: dict[str, dict[str, int]] = {}
    for window in WINDOWS:
        sums: Counter[str] = Counter()
        for bucket in buckets[:window]:
            for k, v in bucket.items():
                sums[_text(k)] += int(v)
        out[f"{window}m"] = {name: sums.get(name, 0) for name in COUNTERS}
    return out


async def timings(redis: Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    ids = await redis.zrevrange(keys.finished("completed"), 0, SAMPLE - 1)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(_text(job_id)), ["created_at", "claimed_at", "finished_at"])
        rows = await pipe.execute()
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


async def job_counts(redis: Redis, keys: Keys) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.pending)
        pipe.zcard(keys.active)
        for status in ("completed", "failed", "cancelled"):
            pipe.zcard(keys.finished(status))
        replies = await pipe.execute()
    names = ("pending", "active", "completed", "failed", "cancelled")
    return dict(zip(names, map(int, replies), strict=True))


async def compute_stats(
    redis: Redis, keys: Keys, workers: list[WorkerView] | None = None
) -> dict[str, Any]:
    """The /stats document; `workers` may come from a FleetCache (read here when None)."""
    now = await redis_now_ms(redis)
    if workers is None:
        workers = await live_workers(redis, keys)
    return {
        "now": ms_to_iso(now),
        "pending": await pending_breakdown(redis, keys),
        "jobs": await job_counts(redis, keys),
        "throughput": await throughput(redis, keys, now),
        **await timings(redis, keys),
        "workers": worker_counts(workers),
    }
