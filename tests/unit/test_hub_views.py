"""Pure pieces of the read side: why a job waits, score bands, percentiles, cursors."""

from __future__ import annotations

import pytest

from hub.fleet import why_waiting
from hub.queries import Cursor
from hub.stats import BANDS, band_of, band_scores, percentiles
from shared.capabilities import Capabilities, GpuCapability, HardwareCapabilities
from shared.errors import InvalidInput
from shared.job import Job, JobStatus
from shared.requirements import GpuRequirement, HardwareRequirement, Requirements
from shared.worker_view import Lease, WorkerView

NOW = 1_000_000


def job(**kw: object) -> Job:
    base: dict[str, object] = {
        "id": "j1",
        "service_type": "comfyui",
        "priority": 50,
        "effective_priority": 50,
        "status": JobStatus.PENDING,
        "created_at": NOW,
    }
    return Job(**{**base, **kw})  # type: ignore[arg-type]


def worker(wid: str, services: list[str], gpu: float = 24, **kw: object) -> WorkerView:
    caps = Capabilities(
        services=services,
        hardware=HardwareCapabilities(gpus=[GpuCapability(memory_gb=gpu)]),
    )
    base: dict[str, object] = {
        "id": wid,
        "alive": True,
        "status": "idle",
        "state": "active",
        "capabilities": caps,
        "raw_capabilities": {},
        "info": {},
    }
    return WorkerView(**{**base, **kw})  # type: ignore[arg-type]


BIG = Requirements(hardware=HardwareRequirement(gpu=GpuRequirement(memory_gb=80)))


@pytest.mark.parametrize(
    ("the_job", "workers", "reason", "text"),
    [
        (job(), [], "no_workers", "no worker is registered"),
        (
            job(),
            [worker("a", ["a1111"])],
            "no_capable_worker",
            "no worker offers service 'comfyui'",
        ),
        (job(requirements=BIG), [worker("a", ["comfyui"], 24)], "no_capable_worker", ">= 80 GB"),
        (job(), [worker("a", ["comfyui"], state="paused")], "workers_paused", "paused"),
        (job(), [worker("a", ["comfyui"], status="busy")] * 2, "workers_busy", "2 capable"),
        (job(), [worker("a", ["comfyui"])], "queued", "1 capable worker(s) idle"),
        (job(retry_at=NOW + 5000, attempts=1), [], "backing_off", "backs off until"),
        (
            job(),
            [worker("a", ["comfyui"], leases=[Lease("x", "c", "none", None)], info={"slots": 2})],
            "queued",
            "idle",
        ),
        (job(), [worker("a", ["comfyui"], alive=False)], "no_workers", "no worker"),
    ],
)
def test_why_waiting(the_job: Job, workers: list[WorkerView], reason: str, text: str) -> None:
    answer = why_waiting(the_job, workers, 3, NOW)
    assert answer["reason"] == reason
    assert text in answer["message"]
    assert answer["jobs_ahead"] == 3


def test_bands_cover_every_priority_exactly_once() -> None:
    for priority in range(0, 1001):
        score = (1000 - priority) * 2**43 + 12345
        hits = [
            name
            for name, lo, hi in BANDS
            if band_scores(lo, hi)[0] <= score <= band_scores(lo, hi)[1]
        ]
        assert hits == [band_of(priority)]


def test_percentiles() -> None:
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None, "samples": 0}
    values = list(range(1, 101))
    assert percentiles(values) == {"p50": 50, "p90": 90, "p99": 99, "samples": 100}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "samples": 1}


def test_cursor_round_trip_and_garbage() -> None:
    assert Cursor.decode(Cursor(2, {"default": 40}).encode()) == Cursor(2, {"default": 40})
    two = Cursor(1, {"default": 3, "gpu-eu": 7})
    assert Cursor.decode(two.encode()) == two
    assert Cursor.decode(None) == Cursor(0)
    for bad in ("!!", "e30", "WyJhIiwxXQ", "Wy0xLDBd"):
        with pytest.raises(InvalidInput) as info:
            Cursor.decode(bad)
        assert info.value.field == "cursor"
