"""bench/fleet/metrics.py: Jain's index, weighted fair shares, percentiles, extra delay."""

from __future__ import annotations

import math

import pytest

from bench.fleet.metrics import (
    Percentiles,
    Window,
    burst_fairness,
    extra_delays,
    jain,
    wait_s,
    water_fill,
)
from bench.fleet.trace import HEAVY_CUSTOMER, TraceJob
from bench.fleet.workers import JobRecord


def job(row: int, customer: str, work_s: float = 10.0, priority: int = 50) -> TraceJob:
    return TraceJob(row, 0.0, 100, 10, work_s, "code-7b", "code", 16.0, priority, customer)


def record(row: int, created_ms: int, claimed_ms: int) -> JobRecord:
    return JobRecord(row, "sim-000", 24.0, created_ms, claimed_ms, 0.0, False, 0.0, 1.0, 8.0, "ok")


def test_jain_is_one_when_equal_and_one_over_n_when_one_holds_all() -> None:
    assert jain([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert 0.25 < jain([4.0, 1.0, 1.0, 1.0]) < 1.0
    assert math.isnan(jain([]))


def test_water_fill_satisfies_the_small_and_splits_the_rest_by_weight() -> None:
    shares = water_fill({"small": 10, "a": 100, "b": 100}, {"b": 2.0}, 100)
    assert shares["small"] == pytest.approx(10)
    assert shares["b"] == pytest.approx(2 * shares["a"])
    assert sum(shares.values()) == pytest.approx(100)


def test_water_fill_gives_everyone_its_demand_when_there_is_enough() -> None:
    assert water_fill({"a": 5, "b": 7}, {}, 100) == {"a": 5, "b": 7}


def test_a_burst_that_crowds_the_others_out_is_unfair() -> None:
    jobs = {0: job(0, HEAVY_CUSTOMER), 1: job(1, HEAVY_CUSTOMER), 2: job(2, "cust-01")}
    window = Window(0, 1000)
    # The heavy customer's two jobs run in the burst; the other's waits past its end.
    crowded = [record(0, 0, 10), record(1, 0, 20), record(2, 5, 2000)]
    # The same work, but the other customer's job goes first.
    shared = [record(0, 0, 10), record(1, 0, 3000), record(2, 5, 20)]
    assert burst_fairness(crowded, jobs, window, {}) < 0.9
    assert burst_fairness(shared, jobs, window, {}) == pytest.approx(1.0)


def test_fairness_is_within_a_priority_band() -> None:
    # The heavy customer's urgent job goes first by priority, not by crowding anyone out.
    jobs = {0: job(0, HEAVY_CUSTOMER, priority=80), 1: job(1, "cust-01"), 2: job(2, "cust-02")}
    served = [record(0, 0, 10), record(1, 0, 20), record(2, 0, 30)]
    assert burst_fairness(served, jobs, Window(0, 1000), {}) == pytest.approx(1.0)
    late = [record(0, 0, 10), record(1, 0, 20), record(2, 0, 2000)]
    assert burst_fairness(late, jobs, Window(0, 1000), {}) < 1.0


def test_jobs_outside_the_burst_do_not_count() -> None:
    jobs = {0: job(0, HEAVY_CUSTOMER), 1: job(1, "cust-01")}
    before = [record(0, 0, 10), record(1, 0, 50)]
    assert math.isnan(burst_fairness(before, jobs, Window(100, 200), {}))


def test_waits_are_in_trace_seconds() -> None:
    assert wait_s(record(0, 1000, 1500), factor=60) == pytest.approx(30.0)


def test_percentiles_of_waits() -> None:
    p = Percentiles.of([float(i) for i in reversed(range(101))])
    assert (p.p50, p.p95, p.p99) == (50.0, 95.0, 99.0)


def test_extra_delay_is_the_worst_wait_increase_against_baseline() -> None:
    jobs = {0: job(0, HEAVY_CUSTOMER), 1: job(1, "cust-01"), 2: job(2, "cust-02")}
    baseline = {0: 10.0, 1: 10.0, 2: 50.0}
    worst, others = extra_delays({0: 90.0, 1: 25.0, 2: 20.0}, baseline, jobs)
    assert worst == pytest.approx(80.0)  # the heavy customer's row
    assert others == pytest.approx(15.0)
    assert all(math.isnan(x) for x in extra_delays({0: 1.0}, {}, jobs))
