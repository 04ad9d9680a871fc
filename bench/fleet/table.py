"""The printed tables: one row per policy, waits per priority, and the issue's targets for
`all` against baseline, each PASS or MISS (bench.common.table, which bench/report.py parses)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bench.common import table
from bench.fleet.metrics import RunMetrics

NOT_AVAILABLE = "not available"


@dataclass(frozen=True)
class PolicyResult:
    """A run's metrics, or why there are none; `bound_s` is the sum of the delay bounds of
    its bounded policies in trace seconds (None: no bounded policy on)."""

    name: str
    metrics: RunMetrics | None
    bound_s: float | None = None
    why_not: str = NOT_AVAILABLE


def _r(value: float, digits: int = 1) -> float:
    return round(value, digits) if not math.isnan(value) else value


def policy_table(results: list[PolicyResult], title: str) -> str:
    header = [
        "policy",
        "jobs",
        "wait p50 s",
        "wait p95 s",
        "wait p99 s",
        "cold loads/1000",
        "idle GB*s",
        "Jain in burst",
        "worst extra s",
        "worst extra, others s",
        "bound s",
        "jobs/s",
        "util %",
        "redis us/claim",
    ]
    rows: list[list[object]] = []
    for r in results:
        m = r.metrics
        if m is None:
            rows.append([r.name, r.why_not, *[""] * (len(header) - 2)])
            continue
        rows.append(
            [
                r.name,
                m.jobs,
                _r(m.wait.p50),
                _r(m.wait.p95),
                _r(m.wait.p99),
                _r(m.cold_per_1000),
                m.idle_gb_s,
                _r(m.jain_burst, 3),
                "-" if math.isnan(m.worst_extra_s) else _r(m.worst_extra_s),
                "-" if math.isnan(m.worst_extra_light_s) else _r(m.worst_extra_light_s),
                "-" if r.bound_s is None else _r(r.bound_s),
                _r(m.throughput),
                _r(100 * m.utilisation),
                _r(m.claim_usec_mean),
            ]
        )
    return table(title, header, rows)


def priority_table(results: list[PolicyResult]) -> str:
    rows: list[list[object]] = []
    for r in results:
        if r.metrics is None:
            continue
        for priority, p in r.metrics.wait_by_priority.items():
            rows.append([f"{r.name}, priority {priority}", _r(p.p50), _r(p.p95), _r(p.p99)])
    return table(
        "fleet: queue wait per priority (trace seconds)",
        ["policy, priority", "p50 s", "p95 s", "p99 s"],
        rows,
    )


@dataclass(frozen=True)
class Check:
    what: str
    baseline: object
    measured: object
    target: str
    passed: bool | None  # None: not measured

    @property
    def status(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "MISS")


def target_checks(by_name: Mapping[str, PolicyResult]) -> list[Check]:
    """The issue's targets for `all` against baseline of the same invocation."""
    base = by_name.get("baseline")
    every = by_name.get("all")
    b = base.metrics if base else None
    a = every.metrics if every else None
    if b is None or a is None:
        na = NOT_AVAILABLE
        return [
            Check("cold loads per 1,000 jobs", "", na, ">= 50% fewer than baseline", None),
            Check("p95 queue wait, s", "", na, "<= baseline", None),
            Check("Jain's index during the heavy customer's burst", "", na, ">= 0.9", None),
            Check("Redis time per claim, us", "", na, "<= 1.5x baseline", None),
            Check("worst extra delay vs baseline, others' jobs, s", "", na, "<= bounds", None),
        ]
    fewer = 100 * (1 - a.cold_per_1000 / b.cold_per_1000) if b.cold_per_1000 else 0.0
    bound = every.bound_s if every else None
    return [
        Check(
            "cold loads per 1,000 jobs",
            _r(b.cold_per_1000),
            f"{a.cold_per_1000:.1f} ({fewer:.0f}% fewer)",
            ">= 50% fewer than baseline",
            fewer >= 50,
        ),
        Check(
            "p95 queue wait, s",
            _r(b.wait.p95),
            _r(a.wait.p95),
            "<= baseline",
            a.wait.p95 <= b.wait.p95,
        ),
        Check(
            "Jain's index during the heavy customer's burst",
            _r(b.jain_burst, 3),
            _r(a.jain_burst, 3),
            ">= 0.9",
            a.jain_burst >= 0.9,
        ),
        Check(
            "Redis time per claim, us",
            _r(b.claim_usec_mean),
            f"{a.claim_usec_mean:.1f} ({a.claim_usec_mean / b.claim_usec_mean:.2f}x)",
            "<= 1.5x baseline",
            a.claim_usec_mean <= 1.5 * b.claim_usec_mean,
        ),
        Check(
            "worst extra delay vs baseline, others' jobs, s",
            "-",
            _r(a.worst_extra_light_s),
            f"<= {bound:g} (the bounds)" if bound is not None else "<= bounds",
            None if bound is None else a.worst_extra_light_s <= bound,
        ),
    ]


def targets_table(checks: list[Check]) -> str:
    return table(
        "fleet: targets, `all` against baseline in the same run",
        ["target", "baseline", "all", "need", "status"],
        [[c.what, c.baseline, c.measured, c.target, c.status] for c in checks],
    )
