"""bench/fleet/table.py: the issue's targets for `all` against baseline, PASS or MISS."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.fleet.metrics import Percentiles, RunMetrics
from bench.fleet.table import PolicyResult, policy_table, target_checks, why_missed
from bench.report import parse_tables

BASELINE = RunMetrics(
    jobs=100,
    wait=Percentiles(10.0, 100.0, 200.0),
    wait_by_priority={50: Percentiles(10.0, 100.0, 200.0)},
    cold_per_1000=500.0,
    idle_gb_s=1000.0,
    jain_burst=0.7,
    held_jobs=0,
    worst_passed_over_s=0.0,
    worst_held_s=0.0,
    worst_extra_s=float("nan"),
    worst_extra_light_s=float("nan"),
    throughput=50.0,
    utilisation=0.7,
    claim_usec_mean=100.0,
    claim_usec_p99=300.0,
    claims=400,
)


SLACK_S = 60.0  # an idle worker's poll, trace seconds


def results(**changes: Any) -> dict[str, PolicyResult]:
    every = dataclasses.replace(BASELINE, **changes)
    return {
        "baseline": PolicyResult("baseline", BASELINE),
        "all": PolicyResult("all", every, bound_s=30.0),
    }


def statuses(by_name: dict[str, PolicyResult]) -> list[str]:
    return [c.status for c in target_checks(by_name, SLACK_S)]


def test_all_passes_when_it_meets_every_target() -> None:
    good = results(
        cold_per_1000=250.0,
        wait=Percentiles(5.0, 90.0, 150.0),
        jain_burst=0.95,
        claim_usec_mean=150.0,
        worst_passed_over_s=29.9,
        worst_held_s=90.0,
        worst_extra_light_s=2000.0,  # end-to-end: information, no target
    )
    assert statuses(good) == ["PASS"] * 6
    assert why_missed(target_checks(good, SLACK_S), good) == []


def test_each_target_misses_on_its_own_side_of_the_line() -> None:
    bad = results(
        cold_per_1000=251.0,  # 49.8% fewer
        wait=Percentiles(5.0, 101.0, 150.0),
        jain_burst=0.89,
        claim_usec_mean=151.0,
        worst_passed_over_s=30.0,
        worst_held_s=90.1,
    )
    assert statuses(bad) == ["MISS"] * 6
    reasons = why_missed(target_checks(bad, SLACK_S), bad)
    assert [r.split(":")[0] for r in reasons] == [
        "MISS cold loads",
        "MISS p95 wait",
        "MISS fairness",
        "MISS Redis time per claim",
        "MISS bound",
        "MISS held to claim",
    ]


def test_targets_are_not_measured_without_an_all_run() -> None:
    by_name = {"baseline": PolicyResult("baseline", BASELINE), "all": PolicyResult("all", None)}
    assert statuses(by_name) == ["n/a"] * 6


def test_a_run_that_is_not_available_says_so_in_its_row() -> None:
    text = policy_table([PolicyResult("baseline", BASELINE), PolicyResult("fit", None)], "t")
    [t] = parse_tables(text)
    assert t.rows[1][:2] == ("fit", "not available")
    assert t.rows[0][0] == "baseline"
