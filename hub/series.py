"""The dashboard's charts: the last hour, minute by minute, from the `stats:{minute}` hashes.

Every number comes from what the scripts already keep per minute (shared/minute_stats.py):
submissions, completions and failures are the minute's counters; wait p50/p95 come from the
minute's wait histogram (bucket precision, about 19%); queue depth per service is the sample
one hub's maintenance tick takes each minute (`sample_depth`). The current minute is still
counting, and its depth is read live rather than sampled, so the charts move while one
watches. Reading an hour is one pipelined round trip of 60 HGETALLs plus the live depth.

Service names come from clients, so every depth document here is folded to the deepest
few services plus "(other)": neither a minute's hash nor the chart grows with the names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from hub.stats import MAX_CLASSES, band_scores
from shared.job import MAX_EFFECTIVE_PRIORITY
from shared.job_reads import JobReads
from shared.minute_stats import OTHER_SERVICES, histogram_percentile, parse_minute
from shared.reads import Reads

MINUTES: Final = 60
SAMPLED_SERVICES: Final = 10  # services named in a minute's sample; the rest are "(other)"
SHOWN_SERVICES: Final = 8  # lines on the depth chart
THROUGHPUT: Final = ("submitted", "completed", "failed")
PERCENTILES: Final = (50, 95)

Series = list[int | None]


def fold(depths: Mapping[str, int], keep: int) -> dict[str, int]:
    """The `keep` deepest services by name, every other one summed under "(other)"."""
    named = sorted(
        ((s, n) for s, n in depths.items() if s != OTHER_SERVICES), key=lambda i: (-i[1], i[0])
    )
    out = dict(named[:keep])
    rest = sum(n for _, n in named[keep:]) + depths.get(OTHER_SERVICES, 0)
    if rest:
        out[OTHER_SERVICES] = rest
    return out


async def service_depths(jobs: JobReads) -> dict[str, int]:
    """Claimable pending jobs per service now (the requirement classes' sizes; retries
    backing off are in no class), folded to SAMPLED_SERVICES."""
    return fold(await _depths(jobs), SAMPLED_SERVICES)


async def _depths(jobs: JobReads) -> dict[str, int]:
    counts = await jobs.pending_counts(
        [band_scores(0, MAX_EFFECTIVE_PRIORITY)], max_classes=MAX_CLASSES
    )
    depths: dict[str, int] = {}
    for cls in counts.by_class:
        if cls.in_ranges[0]:
            depths[cls.service] = depths.get(cls.service, 0) + cls.in_ranges[0]
    return depths


def depth_lines(samples: Sequence[dict[str, int] | None]) -> dict[str, Series]:
    """One line per service across the minutes, the SHOWN_SERVICES highest peaks named and
    the rest summed as "(other)" (last). None where a minute has no sample."""
    peaks: dict[str, int] = {}
    for sample in samples:
        for service, n in (sample or {}).items():
            peaks[service] = max(peaks.get(service, 0), n)
    shown = fold(peaks, SHOWN_SERVICES)
    lines: dict[str, Series] = {s: [] for s in shown if s != OTHER_SERVICES}
    other: Series = []
    for sample in samples:
        folded = None if sample is None else {s: 0 for s in lines}
        rest = None if sample is None else 0
        for service, n in (sample or {}).items():
            if folded is not None and service in folded:
                folded[service] = n
            elif rest is not None:
                rest += n
        for service, line in lines.items():
            line.append(None if folded is None else folded[service])
        other.append(rest)
    if OTHER_SERVICES in shown:
        lines[OTHER_SERVICES] = other
    return lines


def build_series(
    minutes: Sequence[int], buckets: Sequence[Mapping[str, int]], live_depth: dict[str, int]
) -> dict[str, Any]:
    """The chart document for `minutes` (oldest first; the last is the current one) and
    their raw hashes. `live_depth` stands in for the current minute's sample."""
    parsed = [parse_minute(b) for b in buckets]
    samples = [m.depth for m in parsed[:-1]] + [live_depth]
    return {
        "minutes": [m * 60_000 for m in minutes],
        "throughput": {c: [m.counters.get(c, 0) for m in parsed] for c in THROUGHPUT},
        "wait_ms": {
            **{f"p{p}": [histogram_percentile(m.waits, p) for m in parsed] for p in PERCENTILES},
            "claims": [sum(m.waits.values()) for m in parsed],
        },
        "depth": depth_lines(samples),
    }


async def chart_series(pools: Sequence[Reads]) -> dict[str, Any]:
    """The last MINUTES minutes, the current one included (GET /dashboard/series), over
    `pools` (each pool's read model). Each pool keeps its own minute hashes; they are
    summed field by field, which is exact for counters and wait histograms alike, and a
    minute's depth is the sum of the pools' samples."""
    now = await pools[0].now_ms()
    current = now // 60_000
    minutes = range(current - MINUTES + 1, current + 1)
    buckets: list[Counter[str]] = [Counter() for _ in minutes]
    live: Counter[str] = Counter()
    for reads in pools:
        for total, bucket in zip(buckets, await reads.jobs.minute_counters(minutes), strict=True):
            total.update(bucket)
        live.update(await _depths(reads.jobs))
    depth = fold(dict(live), SAMPLED_SERVICES)
    return {"now": now, **build_series(minutes, [dict(b) for b in buckets], depth)}
