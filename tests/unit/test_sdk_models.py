"""The SDK's own models read exactly what the hub writes: each is built here from the hub's
real serialisers (shared/job.py, shared/worker_view.py, hub/events.py), so a renamed field
on either side fails here; and they read it tolerantly (unknown fields kept in `raw`,
missing ones defaulted) but never silently wrongly (a wrong type is a ProtocolError)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from emp import Job, JobEvent, JobFailed, JobRequest, JobStatus, ProtocolError, Worker, WorkerEvent
from emp.events import parse_event
from emp.images import images_of
from hub.events import Event as HubEvent
from shared.capabilities import Capabilities, GpuCapability, HardwareCapabilities
from shared.job import Job as HubJob
from shared.job import JobRequest as HubJobRequest
from shared.job import JobStatus as HubJobStatus
from shared.requirements import GpuRequirement, HardwareRequirement, Requirements
from shared.worker_view import Lease, WorkerView

PNG = b"\x89PNG\r\n\x1a\nrest-of-file"
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def hub_job(**changes: Any) -> HubJob:
    base = HubJob(
        id="job-1",
        service_type="comfyui",
        customer_id="acme",
        priority=60,
        effective_priority=80,
        payload={"workflow": {}},
        requirements=Requirements(hardware=HardwareRequirement(gpu=GpuRequirement(memory_gb=24))),
        status=HubJobStatus.ACTIVE,
        progress=42.5,
        message="step 3/7",
        worker_id="w1",
        attempts=1,
        tags=["a"],
        created_at=NOW_MS,
        claimed_at=NOW_MS + 1500,
        event_seq=9,
    )
    return msgspec.structs.replace(base, **changes)


def test_a_job_reads_what_the_hub_shows() -> None:
    job = Job.from_json(hub_job().to_public())
    assert job.id == "job-1"
    assert job.status is JobStatus.ACTIVE
    assert (job.priority, job.effective_priority) == (60, 80)
    assert (job.progress, job.message, job.worker_id, job.attempts) == (42.5, "step 3/7", "w1", 1)
    assert job.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert job.claimed_at == datetime(2026, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    assert job.finished_at is None
    assert job.event_seq == 9
    assert job.tags == ["a"]
    assert job.preferred_models == []
    assert Job.from_json(hub_job(preferred_models=["sdxl"]).to_public()).preferred_models == [
        "sdxl"
    ]
    assert not job.terminal


def test_a_job_keeps_fields_it_does_not_know_and_defaults_missing_ones() -> None:
    job = Job.from_json({"id": "j", "service_type": "s", "status": "pending", "new": [1]})
    assert job.raw["new"] == [1]
    assert (job.progress, job.attempts, job.tags, job.payload) == (0.0, 0, [], None)


def test_a_job_with_a_wrong_type_is_a_protocol_error_naming_the_field() -> None:
    with pytest.raises(ProtocolError, match=r"job\.attempts: expected an integer"):
        Job.from_json({"id": "j", "service_type": "s", "status": "active", "attempts": "1"})
    with pytest.raises(ProtocolError, match="unknown status"):
        Job.from_json({"id": "j", "service_type": "s", "status": "paused"})


def test_raise_for_status_fails_failed_and_cancelled_jobs() -> None:
    for status in (HubJobStatus.FAILED, HubJobStatus.CANCELLED):
        with pytest.raises(JobFailed, match="job-1"):
            Job.from_json(hub_job(status=status, error="boom").to_public()).raise_for_status()
    done = Job.from_json(hub_job(status=HubJobStatus.COMPLETED).to_public())
    assert done.raise_for_status() is done


def test_a_job_request_is_what_the_hub_accepts() -> None:
    request = JobRequest(
        service_type="comfyui",
        payload={"workflow": {}},
        priority=70,
        requirements={"hardware": {"gpu": {"memory_gb": 24}}, "models": ["sdxl.safetensors"]},
        deadline=datetime(2026, 1, 1, 12, tzinfo=UTC),
        tags=["x"],
    )
    body = request.to_json()
    accepted = msgspec.json.decode(msgspec.json.encode(body), type=HubJobRequest)
    assert accepted.priority == 70
    assert accepted.requirements.models == ["sdxl.safetensors"]
    assert accepted.deadline == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert "customer_id" not in body  # unset: the hub's default (or the token's customer)
    assert JobRequest(service_type="s").to_json() == {"service_type": "s"}


def test_events_read_the_hubs_wire_shape() -> None:
    job_event = HubEvent.from_fields(
        f"{NOW_MS}-0",
        {"kind": "job", "type": "progress", "job": "job-1", "seq": "4", "customer": "acme",
         "data": '{"progress": 50, "message": "half"}'},
    )  # fmt: skip
    parsed = parse_event(job_event.to_wire())
    assert isinstance(parsed, JobEvent)
    assert (parsed.type, parsed.job_id, parsed.seq, parsed.customer_id) == (
        "progress",
        "job-1",
        4,
        "acme",
    )
    assert (parsed.progress, parsed.message) == (50.0, "half")
    assert parsed.time == datetime(2026, 1, 1, tzinfo=UTC)
    worker_event = HubEvent.from_fields(
        f"{NOW_MS}-1", {"kind": "worker", "type": "worker_down", "worker": "w1", "data": "{}"}
    )
    down = parse_event(worker_event.to_wire())
    assert isinstance(down, WorkerEvent)
    assert (down.type, down.worker_id) == ("worker_down", "w1")


def test_a_worker_reads_what_the_hub_shows() -> None:
    caps = Capabilities(
        services=["comfyui"],
        hardware=HardwareCapabilities(
            gpus=[GpuCapability(memory_gb=80, name="NVIDIA H100", index=i) for i in range(2)]
        ),
        models=["sdxl.safetensors", "flux.safetensors"],
        warm_models=["flux.safetensors"],
    )
    view = WorkerView(
        id="w1",
        alive=True,
        status="busy",
        state="draining",
        capabilities=caps,
        raw_capabilities=msgspec.to_builtins(caps),
        info={},
        last_heartbeat=NOW_MS - 2000,
        leases=[Lease("job-1", "acme", "none", NOW_MS - 5000)],
        completed=7,
    )
    worker = Worker.from_json(view.to_public(NOW_MS))
    assert (worker.id, worker.status, worker.state) == ("w1", "busy", "draining")
    assert [(g.name, g.memory_gb, g.index) for g in worker.gpus] == [
        ("NVIDIA H100", 80.0, 0),
        ("NVIDIA H100", 80.0, 1),
    ]
    assert worker.models == ["sdxl.safetensors", "flux.safetensors"]
    assert worker.warm_models == ["flux.safetensors"]
    assert worker.services == ["comfyui"]
    assert worker.current_jobs == ["job-1"]
    assert worker.heartbeat_age_seconds == 2.0
    assert worker.completed == 7


def comfy_image(**fields: Any) -> dict[str, Any]:
    return {"node": "9", "filename": "out_00001_.png", "subfolder": "", "type": "output",
            "content_type": "image/png", **fields}  # fmt: skip


def test_comfyui_images_come_inline_or_by_url() -> None:
    inline = comfy_image(bytes=len(PNG), base64=base64.b64encode(PNG).decode())
    by_url = comfy_image(bytes=10**8, url="http://127.0.0.1:8188/view?filename=out_00001_.png")
    first, second = images_of({"prompt_id": "p", "outputs": {}, "images": [inline, by_url]})
    assert (first.inline, first.data, first.size, first.node) == (True, PNG, len(PNG), "9")
    assert (second.inline, second.data, second.url) == (False, None, by_url["url"])


def test_a1111_images_are_bare_base64_pngs() -> None:
    (image,) = images_of({"images": [base64.b64encode(PNG).decode()], "parameters": {}})
    assert (image.filename, image.content_type, image.data) == ("image-0.png", "image/png", PNG)


def test_results_without_images_have_none_and_bad_base64_is_an_error() -> None:
    assert images_of({"steps": 3}) == images_of(None) == images_of({"images": "x"}) == []
    with pytest.raises(ProtocolError, match=r"images\[0\]"):
        images_of({"images": [comfy_image(base64="not base64!")]})


def test_saving_an_image_keeps_it_inside_the_directory(tmp_path: Path) -> None:
    (image,) = images_of({"images": [comfy_image(filename="../../etc/x.png", base64="AAAA")]})
    saved = image.save(tmp_path)
    assert saved == tmp_path / "x.png"
    assert saved.read_bytes() == b"\x00\x00\x00"
