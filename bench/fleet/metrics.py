"""What one replay measured, from its job records: waits, cold loads, memory held idle,
fairness during the heavy customer's burst, how long the policies held jobs back, extra
delay against baseline, throughput and Redis time per claim.

Waits are reported in trace seconds (the measured wait times the compression factor), so
they read as the trace's own hour would have felt.

Fairness is Jain's index (Jain, Chiu, Hawe 1984) of x_i = served_i / fair_i over the
customers with work waiting during the heavy customer's burst (trace.BURST), within each
priority band (fair share divides a band; a higher priority goes first whoever submits it),
averaged over the bands by the work each served. served_i is the work (GPU-seconds, trace
time) of customer i's jobs claimed in the burst; fair_i is its weighted max-min share of
what the band served in the burst (water-filling over each customer's demand: the work of
its jobs that were waiting at some point in the burst). 1.0 means every customer got its
fair share; a heavy customer crowding the others out lowers it. Work left waiting when the
burst ends is the contention: without any, everyone got all it asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bench.common import percentile
from bench.fleet.replay import Held
from bench.fleet.trace import BURST, HEAVY_CUSTOMER, TraceJob
from bench.fleet.workers import JobRecord


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all values are equal, 1/n when one holds everything."""
    if not values:
        return float("nan")
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def water_fill(
    demands: Mapping[str, float], weights: Mapping[str, float], capacity: float
) -> dict[str, float]:
    """Weighted max-min fair shares of `capacity`: nobody gets more than it asks for, and
    what the satisfied leave is shared by the rest in proportion to their weights."""
    shares = dict.fromkeys(demands, 0.0)
    open_ = {k for k, d in demands.items() if d > 0}
    left = capacity
    while open_ and left > 1e-9:
        total_weight = sum(weights.get(k, 1.0) for k in open_)
        per_weight = left / total_weight
        satisfied = {k for k in open_ if demands[k] - shares[k] <= per_weight * weights.get(k, 1.0)}
        if not satisfied:
            for k in open_:
                shares[k] += per_weight * weights.get(k, 1.0)
            break
        for k in satisfied:
            left -= demands[k] - shares[k]
            shares[k] = demands[k]
        open_ -= satisfied
    return shares


@dataclass(frozen=True)
class Window:
    """The heavy customer's burst, in Redis milliseconds."""

    start_ms: float
    end_ms: float


def _band_fairness(
    demand: Mapping[str, float], served: Mapping[str, float], weights: Mapping[str, float]
) -> float:
    fair = water_fill(demand, weights, sum(served.values()))
    return jain([served.get(c, 0.0) / share for c, share in fair.items() if share > 0])


def burst_fairness(
    records: Iterable[JobRecord],
    jobs: Mapping[int, TraceJob],
    window: Window,
    weights: Mapping[str, float],
) -> float:
    """Jain's index of served against fair shares in `window`, per priority band (fair
    share divides a band; a higher priority goes first whoever submits it), averaged over
    the bands weighted by the work each served."""
    demand: dict[int, dict[str, float]] = {}
    served: dict[int, dict[str, float]] = {}
    for r in records:
        if r.created_ms > window.end_ms or r.claimed_ms < window.start_ms:
            continue
        job = jobs[r.row]
        band = demand.setdefault(job.priority, {})
        band[job.customer] = band.get(job.customer, 0.0) + job.work_s
        if r.claimed_ms <= window.end_ms:
            got = served.setdefault(job.priority, {})
            got[job.customer] = got.get(job.customer, 0.0) + job.work_s
    total, weighted = 0.0, 0.0
    for priority, band in demand.items():
        got = served.get(priority, {})
        index = _band_fairness(band, got, weights)
        work = sum(got.values())
        if not math.isnan(index) and work > 0:
            total += work
            weighted += index * work
    return weighted / total if total else float("nan")


def wait_s(record: JobRecord, factor: float) -> float:
    """Queue wait in trace seconds."""
    return (record.claimed_ms - record.created_ms) / 1000 * factor


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Percentiles:
        return cls(percentile(samples, 50), percentile(samples, 95), percentile(samples, 99))


@dataclass(frozen=True)
class RunMetrics:
    jobs: int
    wait: Percentiles
    wait_by_priority: dict[int, Percentiles]
    cold_per_1000: float
    idle_gb_s: float
    jain_burst: float
    held_jobs: int  # jobs a bounded policy passed over as the strict-order best
    worst_passed_over_s: float  # first to last pass-over, trace seconds (the bound's measure)
    worst_held_s: float  # first pass-over to the claim, trace seconds
    worst_extra_s: float  # vs baseline, trace seconds (nan for baseline itself)
    worst_extra_light_s: float  # the same, without the heavy customer's rows
    throughput: float  # jobs per wall second, first arrival to last completion
    utilisation: float  # busy GPU time over fleet time, first arrival to last completion
    claim_usec_mean: float
    claim_usec_p99: float
    claims: int


def extra_delays(
    waits: Mapping[int, float], baseline: Mapping[int, float], jobs: Mapping[int, TraceJob]
) -> tuple[float, float]:
    """(the worst, the worst among rows not the heavy customer's) of each row's wait minus
    its wait under baseline; nan when there is no baseline."""
    if not baseline:
        return float("nan"), float("nan")
    extra = {row: wait - baseline[row] for row, wait in waits.items() if row in baseline}
    light = [e for row, e in extra.items() if jobs[row].customer != HEAVY_CUSTOMER]
    return max(extra.values(), default=math.nan), max(light, default=math.nan)


def measure(
    records: Sequence[JobRecord],
    jobs: Mapping[int, TraceJob],
    *,
    factor: float,
    started_s: float,
    workers: int,
    claim_usec: Sequence[float],
    weights: Mapping[str, float],
    baseline_waits: Mapping[int, float],
    held: Mapping[int, Held],
) -> RunMetrics:
    waits = {r.row: wait_s(r, factor) for r in records}
    by_priority: dict[int, list[float]] = {}
    for r in records:
        by_priority.setdefault(jobs[r.row].priority, []).append(waits[r.row])
    window = Window((started_s + BURST[0] / factor) * 1000, (started_s + BURST[1] / factor) * 1000)
    first_s = min((r.created_ms / 1000 for r in records), default=started_s)
    span = max((r.finished_s for r in records), default=first_s) - first_s
    busy = sum(r.cold_load_s + r.work_s for r in records) / factor
    worst, worst_light = extra_delays(waits, baseline_waits, jobs)
    to_s = factor / 1000  # Redis ms to trace seconds
    return RunMetrics(
        jobs=len(records),
        wait=Percentiles.of(list(waits.values())),
        wait_by_priority={
            p: Percentiles.of(samples) for p, samples in sorted(by_priority.items(), reverse=True)
        },
        cold_per_1000=1000 * sum(r.cold for r in records) / max(len(records), 1),
        idle_gb_s=sum(r.idle_gb * (r.cold_load_s + r.work_s) for r in records),
        jain_burst=burst_fairness(records, jobs, window, weights),
        held_jobs=len(held),
        worst_passed_over_s=max((h.passed_over_ms for h in held.values()), default=0) * to_s,
        worst_held_s=max((h.held_ms for h in held.values()), default=0) * to_s,
        worst_extra_s=worst,
        worst_extra_light_s=worst_light,
        throughput=len(records) / span if span > 0 else float("nan"),
        utilisation=busy / (workers * span) if span > 0 else float("nan"),
        claim_usec_mean=sum(claim_usec) / len(claim_usec) if claim_usec else float("nan"),
        claim_usec_p99=percentile(claim_usec, 99),
        claims=len(claim_usec),
    )
