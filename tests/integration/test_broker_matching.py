"""Matching happens inside the claim: a worker only ever receives jobs it can run."""

from __future__ import annotations

from typing import Any

import pytest

from shared.broker import Broker, Claim, NoClaim
from tests.factories import caps, gpu, job

# (requirements, worker capabilities that satisfy them, capabilities that do not)
DIMENSIONS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "gpu memory": (
        {"hardware": {"gpu": {"memory_gb": 40}}},
        {"hardware": {"gpus": [gpu(80)]}},
        {"hardware": {"gpus": [gpu(24)]}},
    ),
    "gpu count": (
        {"hardware": {"gpu": {"count": 2}}},
        {"hardware": {"gpus": [gpu(24), gpu(24)]}},
        {"hardware": {"gpus": [gpu(24)]}},
    ),
    "gpu model": (
        {"hardware": {"gpu": {"model": "H200"}}},
        {"hardware": {"gpus": [gpu(140, "NVIDIA H200")]}},
        {"hardware": {"gpus": [gpu(80, "NVIDIA H100")]}},
    ),
    "compute capability": (
        {"hardware": {"gpu": {"compute_capability": "9.0"}}},
        {"hardware": {"gpus": [gpu(80, cc="9.0")]}},
        {"hardware": {"gpus": [gpu(80, cc="8.9")]}},
    ),
    "cpu cores": ({"hardware": {"cpu_cores": 8}}, {"hardware": {"cpu_cores": 16}}, {"hardware": {"cpu_cores": 4}}),
    "ram": ({"hardware": {"ram_gb": 64}}, {"hardware": {"ram_gb": 128}}, {"hardware": {"ram_gb": 32}}),
    "models": ({"models": ["sdxl", "flux"]}, {"models": ["flux", "sdxl", "x"]}, {"models": ["sdxl"]}),
    "quality": (
        {"performance": {"quality": "quality"}},
        {"performance": {"quality_levels": ["fast", "quality"]}},
        {"performance": {"quality_levels": ["fast"]}},
    ),
    "region": ({"geographic": {"region": "eu-west"}}, {"geographic": {"region": "eu-west"}}, {"geographic": {"region": "us-east"}}),
    "compliance": (
        {"geographic": {"compliance": ["gdpr"]}},
        {"geographic": {"compliance": ["gdpr", "soc2"]}},
        {"geographic": {"compliance": ["soc2"]}},
    ),
    "cost": ({"cost": {"max_per_hour": 2.0}}, {"cost": {"per_hour": 1.5}}, {"cost": {"per_hour": 2.5}}),
}  # fmt: skip


@pytest.mark.parametrize("dimension", sorted(DIMENSIONS))
async def test_each_dimension_positive_and_negative(broker: Broker, dimension: str) -> None:
    requirements, good, bad = DIMENSIONS[dimension]
    await broker.submit(job(id="j", requirements=requirements))
    assert isinstance(await broker.claim("bad", caps(**bad)), NoClaim)
    claim = await broker.claim("good", caps(**good))
    assert isinstance(claim, Claim)
    assert claim.job.id == "j"


async def test_service_type_must_be_offered(broker: Broker) -> None:
    await broker.submit(job("comfyui", id="j"))
    assert isinstance(await broker.claim("w", caps(("a1111", "sim"))), NoClaim)
    claim = await broker.claim("w", caps(("a1111", "comfyui")))
    assert isinstance(claim, Claim)


async def test_multi_service_worker_takes_the_best_job_across_services(broker: Broker) -> None:
    await broker.submit(job("a1111", id="low", priority=10))
    await broker.submit(job("comfyui", id="high", priority=90))
    claim = await broker.claim("w", caps(("a1111", "comfyui")))
    assert isinstance(claim, Claim)
    assert claim.job.id == "high"


class TestCustomerIsolation:
    async def test_strict_worker_only_runs_its_customers(self, broker: Broker) -> None:
        dedicated = caps(customer_access={"isolation": "strict", "allowed_customers": ["acme"]})
        await broker.submit(job(id="other", customer_id="other", priority=90))
        await broker.submit(job(id="acme", customer_id="acme", priority=10))
        claim = await broker.claim("w", dedicated)
        assert isinstance(claim, Claim)
        assert claim.job.id == "acme"
        assert isinstance(await broker.claim("w", dedicated), NoClaim)

    async def test_strict_job_never_lands_on_shared_hardware(self, broker: Broker) -> None:
        await broker.submit(
            job(id="j", customer_id="acme", requirements={"customer_isolation": "strict"})
        )
        assert isinstance(await broker.claim("shared", caps()), NoClaim)
        loose = caps(customer_access={"isolation": "loose"})
        assert isinstance(await broker.claim("loose", loose), NoClaim)
        dedicated = caps(customer_access={"isolation": "strict", "allowed_customers": ["acme"]})
        assert isinstance(await broker.claim("dedicated", dedicated), Claim)

    async def test_loose_worker_refuses_denied_customers(self, broker: Broker) -> None:
        offer = caps(customer_access={"isolation": "loose", "denied_customers": ["evil"]})
        await broker.submit(job(id="evil", customer_id="evil", priority=90))
        await broker.submit(job(id="fine", customer_id="fine"))
        claim = await broker.claim("w", offer)
        assert isinstance(claim, Claim)
        assert claim.job.id == "fine"

    async def test_loose_job_waits_until_the_worker_runs_no_other_customer(
        self, broker: Broker
    ) -> None:
        offer = caps()  # a worker with two slots claims twice
        await broker.submit(job(id="a1", customer_id="a"))
        first = await broker.claim("w", offer)
        assert isinstance(first, Claim)
        await broker.submit(
            job(id="b-loose", customer_id="b", requirements={"customer_isolation": "loose"})
        )
        assert isinstance(await broker.claim("w", offer), NoClaim)
        assert isinstance(await broker.claim("other-worker", offer), Claim)  # elsewhere: fine

    async def test_running_loose_job_locks_the_worker_to_its_customer(self, broker: Broker) -> None:
        offer = caps()
        await broker.submit(
            job(
                id="a-loose",
                customer_id="a",
                priority=90,
                requirements={"customer_isolation": "loose"},
            )
        )
        await broker.submit(job(id="b1", customer_id="b", priority=80))
        await broker.submit(job(id="a2", customer_id="a", priority=10))
        first = await broker.claim("w", offer)
        assert isinstance(first, Claim)
        assert first.job.id == "a-loose"
        second = await broker.claim("w", offer)
        assert isinstance(second, Claim)
        assert second.job.id == "a2"  # b1 ranks higher but may not share the box
        assert isinstance(await broker.claim("w", offer), NoClaim)
        assert await broker.complete("w", first.job.id, first.token, None) == "ok"
        assert await broker.complete("w", second.job.id, second.token, None) == "ok"
        third = await broker.claim("w", offer)
        assert isinstance(third, Claim)
        assert third.job.id == "b1"

    async def test_none_jobs_share_a_worker(self, broker: Broker) -> None:
        await broker.submit(job(id="a", customer_id="a"))
        await broker.submit(job(id="b", customer_id="b"))
        assert isinstance(await broker.claim("w", caps()), Claim)
        assert isinstance(await broker.claim("w", caps()), Claim)


async def test_a_paused_worker_claims_nothing_until_resumed(broker: Broker) -> None:
    offer = caps()
    await broker.register_worker("w", offer)
    await broker.submit(job(id="j"))
    assert await broker.set_worker_state("w", "paused")
    assert await broker.claim("w", offer) == NoClaim(reason="paused", next_due_ms=None)
    assert await broker.set_worker_state("w", "active")
    assert isinstance(await broker.claim("w", offer), Claim)
    assert not await broker.set_worker_state("ghost", "paused")
