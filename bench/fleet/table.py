"""The printed tables: one row per policy, waits per priority, and the issue's targets for
`all` against baseline, each PASS or MISS (bench.common.table, which bench/report.py parses)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bench.common import table
from bench.fleet.metrics import RunMetrics
from shared.settings import BrokerSettings

NOT_AVAILABLE = "not available"
PASSED_OVER = "longest a policy passed a job over, s"
HELD = "longest a policy held a job, to its claim, s"
SCAN_CLASSES = BrokerSettings().scheduling_scan_classes


@dataclass(frozen=True)
class PolicyResult:
    """A run's metrics, or why there are none; `bound_s` is the longest its bounded policies
    may pass a job over, trace seconds (None: no bounded policy on)."""

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
        "held jobs",
        "worst passed over s",
        "bound s",
        "worst held to claim s",
        "end-to-end extra s (info)",
        "end-to-end extra, others s (info)",
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
                m.held_jobs,
                _r(m.worst_passed_over_s),
                "-" if r.bound_s is None else _r(r.bound_s),
                _r(m.worst_held_s),
                "-" if math.isnan(m.worst_extra_s) else _r(m.worst_extra_s),
                "-" if math.isnan(m.worst_extra_light_s) else _r(m.worst_extra_light_s),
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


def target_checks(by_name: Mapping[str, PolicyResult], claim_slack_s: float) -> list[Check]:
    """The issue's targets for `all` against baseline of the same invocation.
    `claim_slack_s`: how late the next claim may come once a held job's bound ran out (an
    idle worker's poll, trace seconds): the slack of the held-to-claim check."""
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
            Check(PASSED_OVER, "", na, "< the bound", None),
            Check(HELD, "", na, "<= the bound + a claim's slack", None),
        ]
    fewer = 100 * (1 - a.cold_per_1000 / b.cold_per_1000) if b.cold_per_1000 else 0.0
    slack = claim_slack_s
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
            PASSED_OVER,
            "-",
            _r(a.worst_passed_over_s),
            f"< {bound:g} (the bound)" if bound is not None else "< the bound",
            None if bound is None else a.worst_passed_over_s < bound,
        ),
        Check(
            HELD,
            "-",
            _r(a.worst_held_s),
            f"<= {bound + slack:g} (the bound + {slack:g})" if bound is not None else "",
            None if bound is None else a.worst_held_s <= bound + slack,
        ),
    ]


def targets_table(checks: list[Check]) -> str:
    return table(
        "fleet: targets, `all` against baseline in the same run",
        ["target", "baseline", "all", "need", "status"],
        [[c.what, c.baseline, c.measured, c.target, c.status] for c in checks],
    )


def _fewer(base: RunMetrics, other: RunMetrics) -> float:
    return 100 * (1 - other.cold_per_1000 / base.cold_per_1000) if base.cold_per_1000 else 0.0


def why_missed(checks: list[Check], by_name: Mapping[str, PolicyResult]) -> list[str]:
    """A line per missed target saying what the runs of the same invocation show about why."""
    runs = {name: r.metrics for name, r in by_name.items() if r.metrics is not None}
    base, every = runs.get("baseline"), runs.get("all")
    if base is None or every is None:
        return []
    lines = []
    for check in checks:
        if check.passed is not False:
            continue
        if check.what.startswith("cold loads"):
            alone = runs.get("affinity")
            also = (
                f"; affinity alone: {_fewer(base, alone):.0f}% fewer" if alone is not None else ""
            )
            lines.append(
                f"MISS cold loads: `all` has {_fewer(base, every):.0f}% fewer{also}. A job "
                "that arrives while workers are idle wakes an idle worker with its models "
                "warm (warm:{service}:{model}) only when one is idle; else any idle worker "
                "of its service, which takes it cold when it has nothing warm in its scan "
                f"({SCAN_CLASSES} classes beyond strict order's, scheduling_scan_classes) "
                "and priority window; and a job passed over is taken, cold, by the next "
                "claim once AFFINITY_MAX_DELAY_SECONDS ran out."
            )
        elif check.what.startswith("p95"):
            each = ", ".join(
                f"{n} {m.wait.p95:.0f} s" for n, m in runs.items() if n not in ("baseline", "all")
            )
            lines.append(
                f"MISS p95 wait: `all` {every.wait.p95:.0f} s against baseline "
                f"{base.wait.p95:.0f} s (each policy alone: {each}): the jobs passed over "
                "waited longer than the cold loads saved."
            )
        elif check.what.startswith("Jain"):
            fair = runs.get("fair")
            fair_text = f", fair alone {fair.jain_burst:.3f}" if fair is not None else ""
            lines.append(
                f"MISS fairness: Jain's index in the burst: `all` {every.jain_burst:.3f}"
                f"{fair_text}, baseline {base.jain_burst:.3f}. Fair share chooses the customer "
                "only among the classes a claim examines: those within the priority window, "
                f"at most {SCAN_CLASSES} beyond strict order's (scheduling_scan_classes), "
                "while the heavy customer's burst spans a class per model and memory size."
            )
        elif check.what.startswith("Redis time"):
            lines.append(
                "MISS Redis time per claim: with policies on, a claim examines the candidate "
                "classes in the priority window beyond strict order's first match (and fit "
                "looks up smaller idle workers for each)."
            )
        elif check.what == PASSED_OVER:
            lines.append(
                f"MISS bound: a job was passed over {every.worst_passed_over_s:.1f} s after its "
                "first pass-over as the strict-order best: a bounded policy passed it over "
                "past its deadline."
            )
        elif check.what == HELD:
            lines.append(
                f"MISS held to claim: a held job was claimed {every.worst_held_s:.1f} s after "
                "its first pass-over; no policy passed it over after its bound ran out "
                f"(longest pass-over {every.worst_passed_over_s:.1f} s), but no claim took it "
                "sooner: every worker able to run it was busy, idle until its next poll, or "
                "taking higher-priority work (outside the priority window), as strict order "
                "would. The bound limits the pass-overs, not the queueing after them."
            )
    return lines
