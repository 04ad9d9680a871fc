"""Submissions are validated with limits, and every error names the offending field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared.broker import new_job_id
from shared.errors import InvalidInput, PayloadTooLarge
from shared.job import Job, JobRequest, JobStatus
from shared.requirements import Requirements, requirement_class
from shared.validation import check_document, convert, decode_json

VALID = {"service_type": "comfyui", "customer_id": "customer-123", "priority": 75}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "service_type"),
        ({"service_type": "Comfy UI"}, "service_type"),  # "ComfyUI" is comfyui (any case)
        ({"service_type": "a" * 65}, "service_type"),
        ({**VALID, "priority": 101}, "priority"),
        ({**VALID, "priority": -1}, "priority"),
        ({**VALID, "priority": "high"}, "priority"),
        ({**VALID, "id": "has space"}, "id"),
        ({**VALID, "id": "x" * 129}, "id"),
        ({**VALID, "id": "{tag}"}, "id"),
        ({**VALID, "customer_id": "a|b"}, "customer_id"),
        ({**VALID, "payload": []}, "payload"),
        ({**VALID, "max_retries": 101}, "max_retries"),
        ({**VALID, "timeout_seconds": 0}, "timeout_seconds"),
        ({**VALID, "tags": ["t"] * 17}, "tags"),
        ({**VALID, "surprise": 1}, "surprise"),
        ({**VALID, "requirements": {"gpu_memory": 8}}, "requirements.gpu_memory"),
        ({**VALID, "requirements": {"hardware": {"gpu": {"count": 0}}}}, "requirements.hardware.gpu.count"),
        ({**VALID, "requirements": {"hardware": {"gpu": {"memory_gb": "8"}}}}, "requirements.hardware.gpu.memory_gb"),
        ({**VALID, "requirements": {"hardware": {"gpu": {"compute_capability": "nine"}}}}, "requirements.hardware.gpu.compute_capability"),
        ({**VALID, "requirements": {"models": ["m"] * 65}}, "requirements.models"),
        ({**VALID, "requirements": {"customer_isolation": "total"}}, "requirements.customer_isolation"),
        ({**VALID, "deadline": "2026-01-01T00:00:00"}, "deadline"),
    ],
)  # fmt: skip
def test_bad_submissions_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        convert(body, JobRequest)
    assert info.value.field == field


def test_isolation_needs_a_customer_at_submission() -> None:
    request = convert(
        {"service_type": "x", "requirements": {"customer_isolation": "strict"}}, JobRequest
    )
    with pytest.raises(InvalidInput) as info:
        request.check_customer()
    assert info.value.field == "customer_id"


def test_seed_example_is_valid() -> None:
    request = convert(
        {
            **VALID,
            "payload": {"workflow": {}},
            "requirements": {"hardware": {"gpu": {"memory_gb": 8}}},
        },
        JobRequest,
    )
    assert request.requirements.hardware is not None
    assert request.requirements.hardware.gpu is not None
    assert request.requirements.hardware.gpu.memory_gb == 8.0


def test_documents_over_the_size_limit_are_rejected() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        check_document({"blob": "x" * 2000}, "payload", max_bytes=1000)
    assert info.value.field == "payload"


def test_deep_nesting_is_rejected() -> None:
    doc: Any = 1
    for _ in range(40):
        doc = [doc]
    with pytest.raises(InvalidInput, match="nested deeper"):
        check_document({"x": doc}, "payload", max_bytes=10**6)


def test_malformed_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json(b"{not json")
    assert info.value.field == "body"


def test_requirement_class_ignores_field_order_and_separates_customers() -> None:
    a = convert({"models": ["x"], "hardware": {"cpu_cores": 2}}, Requirements)
    b = convert({"hardware": {"cpu_cores": 2}, "models": ["x"]}, Requirements)
    assert requirement_class("sim", "c1", a) == requirement_class("sim", "c1", b)
    assert requirement_class("sim", "c1", a) != requirement_class("sim", "c2", a)
    assert requirement_class("sim", "c1", a) != requirement_class("sim2", "c1", a)


def test_public_job_uses_the_seed_field_names_and_iso_times() -> None:
    job = Job(
        id="j1",
        service_type="sim",
        priority=50,
        effective_priority=50,
        status=JobStatus.PENDING,
        created_at=1_764_443_460_123,
    )
    public = job.to_public()
    for name in (
        "id", "service_type", "customer_id", "priority", "payload", "requirements", "status",
        "progress", "message", "result", "error", "worker_id", "attempts", "max_retries",
        "created_at", "claimed_at", "finished_at",
    ):  # fmt: skip
        assert name in public
    assert public["created_at"] == "2025-11-29T19:11:00.123Z"
    assert public["status"] == "pending"


def test_generated_job_ids_are_version_4_uuids() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    for job_id in ids:
        assert job_id.startswith("job-")
        parsed = uuid.UUID(job_id.removeprefix("job-"))
        assert parsed.hex == job_id.removeprefix("job-")
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
