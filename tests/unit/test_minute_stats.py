"""The per-minute stats beyond counters (wait histogram, depth samples) and the chart
document built from them: pure functions, no Redis."""

from __future__ import annotations

import pytest

from hub.series import MINUTES, SHOWN_SERVICES, build_series, depth_lines, fold
from shared.minute_stats import (
    OTHER_SERVICES,
    bucket_bounds,
    bucket_value,
    histogram_percentile,
    parse_minute,
    wait_bucket,
)

WAITS = [*range(0, 300), 1023, 1024, 1025, 59_999, 60_000, 3_600_000, 86_400_000, 2**40]


@pytest.mark.parametrize("ms", WAITS)
def test_a_wait_lies_in_its_bucket(ms: int) -> None:
    lo, hi = bucket_bounds(wait_bucket(ms))
    assert lo <= ms < hi


def test_buckets_are_exact_below_8_ms_then_at_most_a_quarter_wide() -> None:
    assert [bucket_bounds(b) for b in range(8)] == [(b, b + 1) for b in range(8)]
    for bucket in range(8, 140):
        lo, hi = bucket_bounds(bucket)
        assert bucket_bounds(bucket + 1)[0] == hi  # contiguous, no gaps
        assert (hi - lo) / lo <= 0.25
    assert wait_bucket(86_400_000) < 110  # a day's wait: the hash stays small


def test_histogram_percentiles_use_nearest_rank() -> None:
    assert histogram_percentile({}, 50) is None
    waits = {wait_bucket(ms): 0 for ms in (5, 100, 2000)}
    waits[wait_bucket(5)] += 50
    waits[wait_bucket(100)] += 45
    waits[wait_bucket(2000)] += 5
    assert histogram_percentile(waits, 50) == 5
    p95 = histogram_percentile(waits, 95)
    assert p95 == bucket_value(wait_bucket(100))
    assert p95 is not None
    assert 88 <= p95 <= 112  # within the bucket's precision
    assert histogram_percentile(waits, 96) == bucket_value(wait_bucket(2000))


def test_parse_minute_splits_counters_waits_and_the_depth_sample() -> None:
    raw = {"submitted": 4, "wait:3": 2, "wait:20": 1, "depth_at": 123, "depth:comfyui": 7}
    minute = parse_minute(raw)
    assert minute.counters == {"submitted": 4}
    assert minute.waits == {3: 2, 20: 1}
    assert minute.depth == {"comfyui": 7}
    assert parse_minute({"submitted": 1}).depth is None  # no hub sampled that minute
    assert parse_minute({"depth_at": 1}).depth == {}  # sampled: every queue was empty


def test_fold_names_the_deepest_services_and_sums_the_rest() -> None:
    depths = {f"s{n}": n for n in range(1, 13)}
    folded = fold({**depths, OTHER_SERVICES: 100}, 3)
    assert folded == {"s12": 12, "s11": 11, "s10": 10, OTHER_SERVICES: 100 + sum(range(1, 10))}
    assert fold({"a": 1}, 3) == {"a": 1}


def test_depth_lines_keep_gaps_and_fold_beyond_the_shown_services() -> None:
    many = {f"svc-{n:02d}": n for n in range(1, SHOWN_SERVICES + 3)}
    lines = depth_lines([None, {"a": 2}, {}, many])
    assert len(lines) == SHOWN_SERVICES + 1
    assert list(lines)[-1] == OTHER_SERVICES
    # Named: the 8 highest peaks (svc-10 .. svc-03); "a" and the two shallowest are summed.
    assert lines[OTHER_SERVICES] == [None, 2, 0, 1 + 2]
    top = f"svc-{SHOWN_SERVICES + 2:02d}"
    assert lines[top] == [None, 0, 0, SHOWN_SERVICES + 2]


def test_build_series_reads_counters_waits_and_live_depth() -> None:
    minutes = list(range(1000, 1000 + MINUTES))
    buckets: list[dict[str, int]] = [{} for _ in minutes]
    buckets[-2] = {"submitted": 3, "completed": 2, "wait:5": 2, "depth_at": 1, "depth:sim": 4}
    buckets[-1] = {"submitted": 1, "failed": 1, "wait:40": 1}
    doc = build_series(minutes, buckets, {"sim": 1, "gpu": 2})
    assert doc["minutes"][0] == 1000 * 60_000
    assert len(doc["minutes"]) == MINUTES
    assert doc["throughput"]["submitted"][-2:] == [3, 1]
    assert doc["throughput"]["completed"][-2:] == [2, 0]
    assert doc["throughput"]["failed"][-2:] == [0, 1]
    assert doc["wait_ms"]["p50"][-2:] == [5, bucket_value(40)]
    assert doc["wait_ms"]["claims"][-2:] == [2, 1]
    assert doc["wait_ms"]["p95"][0] is None
    assert doc["depth"]["sim"][-3:] == [None, 4, 1]  # the last one is live
    assert doc["depth"]["gpu"][-3:] == [None, 0, 2]
