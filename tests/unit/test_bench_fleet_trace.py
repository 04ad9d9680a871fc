"""bench/fleet/trace.py: every trace row becomes the same job on every run and machine."""

from __future__ import annotations

import itertools
from collections import Counter

from bench.fleet.trace import (
    BURST,
    HEAVY_CUSTOMER,
    KV_GB_LARGE,
    KV_GB_SMALL,
    MODEL_BY_NAME,
    MODELS,
    PRIORITIES,
    customer_weights,
    describe_mapping,
    load_trace,
    map_row,
)


def test_a_row_maps_to_the_same_job_every_time() -> None:
    assert map_row(42, 10.5, 3000, 20) == map_row(42, 10.5, 3000, 20)
    assert load_trace(limit=200) == load_trace(limit=200)


def test_the_whole_trace_loads_in_arrival_order_from_zero() -> None:
    jobs = load_trace()
    assert len(jobs) == 8819
    assert jobs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(jobs))
    assert [j.row for j in jobs] == list(range(len(jobs)))
    assert len({j.job_id for j in jobs}) == len(jobs)


def test_work_size_grows_with_the_token_counts() -> None:
    short = map_row(1, 0.0, 100, 10)
    longer = map_row(1, 0.0, 100, 200)
    assert longer.work_s > short.work_s > 0


def test_memory_needed_is_the_model_plus_room_for_the_context() -> None:
    small = map_row(7, 0.0, 1000, 10)
    large = map_row(7, 0.0, 7000, 10)
    assert small.model == large.model
    size = MODEL_BY_NAME[small.model].size_gb
    assert small.memory_gb == size + KV_GB_SMALL
    assert large.memory_gb == size + KV_GB_LARGE
    assert small.service == MODEL_BY_NAME[small.model].service


def test_models_are_zipf_popular_and_priorities_come_from_the_set() -> None:
    jobs = load_trace()
    by_model = Counter(j.model for j in jobs)
    assert set(by_model) <= {m.name for m in MODELS}
    assert by_model.most_common(1)[0][0] == MODELS[0].name
    assert by_model[MODELS[0].name] > 2 * by_model[MODELS[2].name]
    assert {j.priority for j in jobs} == {p for p, _ in PRIORITIES}


def test_the_heavy_customer_makes_a_burst() -> None:
    jobs = load_trace()
    in_burst = [j for j in jobs if BURST[0] <= j.arrival_s < BURST[1]]
    outside = [j for j in jobs if not BURST[0] <= j.arrival_s < BURST[1]]
    heavy_in = sum(j.customer == HEAVY_CUSTOMER for j in in_burst) / len(in_burst)
    heavy_out = sum(j.customer == HEAVY_CUSTOMER for j in outside) / len(outside)
    assert heavy_in > 0.7 > 0.1 > heavy_out
    customers = {j.customer for j in jobs}
    assert len(customers) == 30
    assert customers == set(customer_weights())


def test_the_mapping_is_described_with_its_counts() -> None:
    text = "\n".join(describe_mapping(load_trace(limit=100)))
    assert "100 rows" in text
    assert f"{MODELS[0].name} (" in text
    assert HEAVY_CUSTOMER in text
