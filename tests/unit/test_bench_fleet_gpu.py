"""bench/fleet/gpu.py: the simulated GPU's warm models (an LRU by memory) and cold loads."""

from __future__ import annotations

import pytest

from bench.fleet.gpu import COLD_LOAD_S_PER_GB, SimulatedGpu

SIZES = {"a": 10.0, "b": 10.0, "c": 10.0, "big": 30.0}


def test_a_warm_model_costs_no_load() -> None:
    gpu = SimulatedGpu(24, SIZES, warm=["a"])
    run = gpu.run("a", 5.0, 12.0)
    assert not run.cold
    assert run.cold_load_s == 0
    assert run.busy_s == 5.0
    assert (gpu.jobs, gpu.cold_loads) == (1, 0)


def test_a_cold_model_is_loaded_first_and_counted() -> None:
    gpu = SimulatedGpu(24, SIZES)
    run = gpu.run("b", 5.0, 12.0)
    assert run.cold
    assert run.cold_load_s == 10.0 * COLD_LOAD_S_PER_GB
    assert run.busy_s == run.cold_load_s + 5.0
    assert gpu.warm_models == ["b"]
    assert not gpu.run("b", 5.0, 12.0).cold
    assert (gpu.jobs, gpu.cold_loads) == (2, 1)


def test_loading_evicts_the_least_recently_used_until_it_fits() -> None:
    gpu = SimulatedGpu(24, SIZES, warm=["a", "b"])  # 20 of 24 GB
    gpu.run("a", 1.0, 10.0)  # b is now the least recently used
    gpu.run("c", 1.0, 10.0)
    assert gpu.warm_models == ["c", "a"]
    gpu.run("b", 1.0, 10.0)
    assert gpu.warm_models == ["b", "c"]
    assert gpu.cold_loads == 2


def test_a_large_model_evicts_everything_it_needs() -> None:
    gpu = SimulatedGpu(48, SIZES, warm=["a", "b", "c"])
    gpu.run("big", 1.0, 32.0)
    assert gpu.warm_models == ["big", "c"]


def test_memory_held_but_not_needed_is_the_card_minus_the_need() -> None:
    assert SimulatedGpu(80, SIZES).run("a", 1.0, 12.0).idle_gb == 68.0
    assert SimulatedGpu(24, SIZES).run("a", 1.0, 24.0).idle_gb == 0.0


def test_a_model_larger_than_the_card_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        SimulatedGpu(24, SIZES).run("big", 1.0, 32.0)
