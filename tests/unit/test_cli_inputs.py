"""`emp submit`'s flags as a submission: the --require shorthand, --payload and --workflow,
and the mistakes caught before anything is sent (exit code 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from emp.cli import inputs
from emp.cli.inputs import UsageError


def test_requirements_use_short_names_numbers_and_lists() -> None:
    doc = inputs.requirements(
        [
            "gpu.memory_gb=24",
            "gpu.count=2",
            "gpu.model=H100",
            "gpu.compute_capability=8.9",
            "ram_gb=31.5",
            "models=sdxl.safetensors, vae.pt",
            "models=lora.safetensors",
            "region=eu-west",
            "isolation=strict",
            "cost.max_per_hour=2",
        ]
    )
    assert doc == {
        "hardware": {
            "gpu": {"memory_gb": 24, "count": 2, "model": "H100", "compute_capability": "8.9"},
            "ram_gb": 31.5,
        },
        "models": ["sdxl.safetensors", "vae.pt", "lora.safetensors"],
        "geographic": {"region": "eu-west"},
        "customer_isolation": "strict",
        "cost": {"max_per_hour": 2},
    }


def test_no_requirement_flags_send_no_document() -> None:
    assert inputs.requirements([]) is None


def test_unknown_requirement_names_pass_to_the_hub_to_judge() -> None:
    assert inputs.requirements(["gpu.memry_gb=8"]) == {"hardware": {"gpu": {"memry_gb": "8"}}}


@pytest.mark.parametrize(
    ("items", "complaint"),
    [
        (["gpu.memory_gb"], "KEY=VALUE"),
        (["=24"], "KEY=VALUE"),
        (["gpu.memory_gb="], "KEY=VALUE"),
        (["gpu.memory_gb=lots"], "must be a number"),
        (["region=eu", "region=us"], "given twice"),
        (["gpu=big", "gpu.memory_gb=8"], "already has a value"),
    ],
)
def test_malformed_requirements_are_refused(items: list[str], complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        inputs.requirements(items)


def test_the_workflow_file_becomes_the_payloads_workflow(tmp_path: Path) -> None:
    (tmp_path / "wf.json").write_text('{"3": {"class_type": "KSampler"}}', encoding="utf-8")
    (tmp_path / "payload.json").write_text('{"seed": 1}', encoding="utf-8")
    workflow = str(tmp_path / "wf.json")
    expected = {"seed": 1, "workflow": {"3": {"class_type": "KSampler"}}}
    assert inputs.payload('{"seed": 1}', workflow) == expected
    assert inputs.payload(f"@{tmp_path / 'payload.json'}", workflow) == expected
    assert inputs.payload(None, workflow) == {"workflow": {"3": {"class_type": "KSampler"}}}
    assert inputs.payload(None, None) is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("@/no/file", "cannot read"),
    ],
)
def test_a_bad_payload_is_refused(text: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        inputs.payload(text, None)


def test_deadlines_are_iso_times() -> None:
    assert inputs.deadline("2026-01-01T12:00Z") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert inputs.deadline(None) is None
    with pytest.raises(UsageError, match="ISO-8601"):
        inputs.deadline("tomorrow")
