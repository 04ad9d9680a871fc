"""The pure-Python matcher is the specification of matching (the README's Matching table,
docs/ARCHITECTURE.md#requirements-and-capabilities); these cases pin it down."""

from __future__ import annotations

from typing import Any

import pytest

from shared.matching import RunningCustomer, gpu_model_matches, matches, mismatch
from tests.factories import caps, demand, gpu

H200 = gpu(140.4, "NVIDIA H200", "9.0")
RTX = gpu(24.0, "NVIDIA GeForce RTX 4090", "8.9")


def test_absent_requirements_match_any_worker_offering_the_service() -> None:
    assert matches(demand(), caps())
    assert mismatch(demand("comfyui"), caps()) == "service 'comfyui' not offered"


@pytest.mark.parametrize(
    ("requirement", "worker_gpus", "ok"),
    [
        ({"memory_gb": 24}, [RTX], True),
        ({"memory_gb": 24.1}, [RTX], False),
        ({"memory_gb": 80}, [RTX, H200], True),
        ({"memory_gb": 80, "count": 2}, [RTX, H200], False),  # never split across GPUs
        ({"memory_gb": 20, "count": 2}, [RTX, H200], True),
        ({"count": 1}, [], False),
        ({}, [], False),  # asking for a GPU at all needs one
        ({"model": "h200"}, [H200], True),  # case-insensitive
        ({"model": "RTX 4090"}, [RTX], True),  # whole words, in order
        ({"model": "H20"}, [H200], False),  # not a substring match
        ({"compute_capability": "8.9"}, [RTX], True),
        ({"compute_capability": "9.0"}, [RTX], False),
        ({"compute_capability": "8.10"}, [RTX], False),  # numeric, not lexicographic
        ({"compute_capability": "8.0"}, [gpu(24, cc=None)], False),  # unknown cc never satisfies
    ],
)
def test_gpu(requirement: dict[str, Any], worker_gpus: list[dict[str, Any]], ok: bool) -> None:
    d = demand(hardware={"gpu": requirement})
    c = caps(hardware={"gpus": worker_gpus})
    assert matches(d, c) is ok


def test_gpu_reason_names_the_requirement() -> None:
    d = demand(hardware={"gpu": {"memory_gb": 80}})
    assert mismatch(d, caps(hardware={"gpus": [RTX]})) == "needs 1 GPU(s) >= 80 GB"


def test_model_tokens() -> None:
    assert gpu_model_matches("a100", "NVIDIA A100-SXM4-80GB")
    assert not gpu_model_matches("A100", "NVIDIA RTX A1000")


@pytest.mark.parametrize(
    ("requirement", "offer", "ok"),
    [
        ({"cpu_cores": 8}, {"cpu_cores": 8}, True),
        ({"cpu_cores": 9}, {"cpu_cores": 8}, False),
        ({"ram_gb": 126}, {"ram_gb": 125.9}, False),
        ({"ram_gb": 64}, {"ram_gb": 125.9}, True),
    ],
)
def test_cpu_and_ram(requirement: dict[str, Any], offer: dict[str, Any], ok: bool) -> None:
    assert matches(demand(hardware=requirement), caps(hardware=offer)) is ok


def test_models_are_a_subset() -> None:
    worker = caps(models=["sdxl", "flux"])
    assert matches(demand(models=["sdxl"]), worker)
    assert matches(demand(models=["sdxl", "flux"]), worker)
    assert mismatch(demand(models=["sdxl", "sd3"]), worker) == "needs model 'sd3'"


def test_quality_level_is_a_member() -> None:
    worker = caps(performance={"quality_levels": ["fast", "balanced"]})
    assert matches(demand(performance={"quality": "fast"}), worker)
    assert not matches(demand(performance={"quality": "quality"}), worker)
    assert not matches(demand(performance={"quality": "fast"}), caps())


def test_region_is_equal_and_compliance_a_subset() -> None:
    worker = caps(geographic={"region": "eu-west", "compliance": ["gdpr", "iso27001"]})
    assert matches(demand(geographic={"region": "eu-west", "compliance": ["gdpr"]}), worker)
    assert not matches(demand(geographic={"region": "us-east"}), worker)
    assert not matches(demand(geographic={"compliance": ["hipaa"]}), worker)
    assert not matches(demand(geographic={"region": "eu-west"}), caps())


def test_cost_ceiling() -> None:
    worker = caps(cost={"per_hour": 1.2})
    assert matches(demand(cost={"max_per_hour": 1.2}), worker)
    assert not matches(demand(cost={"max_per_hour": 1.19}), worker)
    assert matches(demand(cost={"max_per_hour": 0}), caps())  # an unpriced worker is free


class TestCustomerIsolation:
    """Worker side: strict serves only its allow-list, loose anyone not denied, none anyone.
    Job side: strict needs a strict worker listing the customer; loose never shares a box
    with another customer's job; none runs anywhere the customer is served."""

    strict_worker = caps(customer_access={"isolation": "strict", "allowed_customers": ["acme"]})
    loose_worker = caps(customer_access={"isolation": "loose", "denied_customers": ["evil"]})
    open_worker = caps()

    def test_strict_worker_serves_only_its_customers(self) -> None:
        assert matches(demand(customer="acme"), self.strict_worker)
        assert not matches(demand(customer="other"), self.strict_worker)
        assert not matches(demand(customer=""), self.strict_worker)

    def test_loose_worker_serves_anyone_not_denied(self) -> None:
        assert matches(demand(customer="other"), self.loose_worker)
        assert not matches(demand(customer="evil"), self.loose_worker)

    def test_none_worker_serves_anyone(self) -> None:
        assert matches(demand(customer="evil"), self.open_worker)

    def test_strict_job_needs_dedicated_hardware(self) -> None:
        job = demand(customer="acme", customer_isolation="strict")
        assert matches(job, self.strict_worker)
        assert not matches(job, self.loose_worker)
        assert not matches(job, self.open_worker)

    def test_loose_job_never_shares_a_worker_with_another_customer(self) -> None:
        job = demand(customer="acme", customer_isolation="loose")
        assert matches(job, self.open_worker, [RunningCustomer("acme", "none")])
        assert not matches(job, self.open_worker, [RunningCustomer("other", "none")])

    def test_running_loose_job_locks_the_worker_to_its_customer(self) -> None:
        running = [RunningCustomer("acme", "loose")]
        assert matches(demand(customer="acme"), self.open_worker, running)
        assert not matches(demand(customer="other"), self.open_worker, running)

    def test_none_job_may_share_with_other_none_jobs(self) -> None:
        assert matches(demand(customer="b"), self.open_worker, [RunningCustomer("a", "none")])
