"""A gateway grant narrows what a worker declares; a worker can narrow its grant, never widen it."""

from __future__ import annotations

import pytest

from shared.capabilities import Capabilities, CustomerAccess, GeographicCapabilities
from shared.errors import InvalidInput
from shared.validation import convert
from shared.worker_grants import Grant, grant_from_json, new_token, worker_id_of


def declared(**fields: object) -> Capabilities:
    return convert({"services": ["comfyui", "a1111"], **fields}, Capabilities)


def test_services_outside_the_grant_are_dropped() -> None:
    grant = Grant(worker_id="w", services=["comfyui", "rest_sync"])
    assert grant.cap(declared()).services == ["comfyui"]


def test_a_worker_cannot_make_itself_dedicated_without_a_dedicated_grant() -> None:
    strict = declared(customer_access={"isolation": "strict", "allowed_customers": ["acme"]})
    capped = Grant(worker_id="w", services=["comfyui"]).cap(strict)
    assert capped.customer_access.isolation != "strict"
    assert capped.customer_access.allowed_customers == []


def test_a_dedicated_grant_makes_the_worker_strict_for_its_customers() -> None:
    grant = Grant(worker_id="w", services=["comfyui"], isolation="strict", customers=["acme", "b"])
    assert grant.cap(declared()).customer_access == CustomerAccess(
        isolation="strict", allowed_customers=["acme", "b"]
    )
    narrower = declared(customer_access={"isolation": "strict", "allowed_customers": ["b", "x"]})
    assert grant.cap(narrower).customer_access.allowed_customers == ["b"]


def test_a_worker_may_refuse_customers_under_any_grant() -> None:
    loose = declared(customer_access={"isolation": "loose", "denied_customers": ["evil"]})
    capped = Grant(worker_id="w", services=["comfyui"]).cap(loose)
    assert capped.customer_access == CustomerAccess(isolation="loose", denied_customers=["evil"])


def test_regions_and_compliance_are_attested_by_the_grant_not_the_box() -> None:
    box = declared(geographic={"region": "eu-west", "compliance": ["hipaa", "gdpr"]})
    assert Grant(worker_id="w", services=["comfyui"]).cap(box).geographic == (
        GeographicCapabilities(region="eu-west", compliance=[])
    )
    granted = Grant(worker_id="w", services=["comfyui"], regions=["us-east"], compliance=["gdpr"])
    assert granted.cap(box).geographic == GeographicCapabilities(region=None, compliance=["gdpr"])


def test_hardware_and_models_are_the_workers_own_declaration() -> None:
    box = declared(models=["sdxl"], hardware={"gpus": [{"memory_gb": 80}], "cpu_cores": 32})
    capped = Grant(worker_id="w", services=["comfyui"]).cap(box)
    assert (capped.models, capped.hardware) == (box.models, box.hardware)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"worker_id": "w"}, "services"),
        ({"worker_id": "w", "services": []}, "services"),
        ({"worker_id": "w", "services": ["comfyui"], "isolation": "strict"}, "customers"),
        ({"worker_id": "w", "services": ["comfyui"], "customers": ["acme"]}, "customers"),
        ({"worker_id": "w", "services": ["comfyui"], "max_concurrency": 0}, "max_concurrency"),
        ({"worker_id": "w", "services": ["comfyui"], "admin": True}, "admin"),
    ],
)
def test_a_grant_that_cannot_be_issued_names_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        grant_from_json(body)
    assert refused.value.field == field


def test_a_token_names_its_worker_and_nothing_else_parses_as_one() -> None:
    token = new_token("box.7:eu")
    assert worker_id_of(token) == "box.7:eu"
    assert token != new_token("box.7:eu")
    for other in ("", "egw", "egw..", "egw.box", "Bearer egw.box.s", "operator-token-0001"):
        assert worker_id_of(other) is None, other
