"""What `emp` shows people: tables that line up, the GPU column, the progress bar as a
job's events move it, and machine output in the shapes of the hub's messages."""

from __future__ import annotations

import io
from typing import Any

from emp import Gpu, Job, JobEvent, Snapshot, StreamGap, Worker
from emp.cli import render
from emp.cli.output import Output, event_json


def job(**fields: Any) -> Job:
    return Job.from_json(
        {"id": "job-1", "service_type": "simulation", "status": "pending", **fields}
    )


def progress_event(seq: int, kind: str = "progress", **data: Any) -> JobEvent:
    return JobEvent(type=kind, job_id="job-1", seq=seq, data=data)


def test_tables_align_columns_and_clip_long_cells() -> None:
    lines = render.table(("ID", "NAME"), [("1", "a"), ("22", "x" * 100)])
    assert lines[0] == "ID  NAME"
    assert lines[1] == "1   a"
    assert lines[2].startswith("22  xxx")
    assert len(lines[2]) == 4 + render.MAX_CELL
    assert lines[2].endswith("…")


def test_the_gpu_column_counts_identical_cards() -> None:
    cards = [Gpu("NVIDIA H100", 80), Gpu("NVIDIA H100", 80, 1), Gpu("RTX 4090", 24, 2)]
    assert render.gpus(cards) == "2x NVIDIA H100 (80 GB), 1x RTX 4090 (24 GB)"
    assert render.gpus([]) == "-"


def test_workers_show_id_state_gpu_models_and_current_job() -> None:
    worker = Worker(
        id="w1",
        alive=True,
        status="busy",
        state="draining",
        gpus=[Gpu("L4", 24)],
        models=["sdxl.safetensors"],
        current_jobs=["job-1"],
    )
    header, row = render.worker_rows([worker])
    assert header.split() == ["ID", "STATUS", "STATE", "GPU", "MODELS", "JOB"]
    assert row.split() == [
        "w1",
        "busy",
        "draining",
        "1x",
        "L4",
        "(24",
        "GB)",
        "sdxl.safetensors",
        "job-1",
    ]


def test_the_progress_bar_follows_a_jobs_stream() -> None:
    progress = render.Progress("job-1")
    progress.update(Snapshot(job()))
    assert progress.line() == "job-1  [" + "." * 30 + "]   0%  pending"
    progress.update(progress_event(2, "claimed", worker_id="w1"))
    progress.update(progress_event(3, progress=50, message="step 2/4"))
    assert progress.line() == "job-1  [" + "#" * 15 + "." * 15 + "]  50%  active  step 2/4"
    progress.update(progress_event(4, "completed"))
    assert progress.line().startswith("job-1  [" + "#" * 30 + "] 100%  completed")


def test_a_failed_job_shows_its_error_on_the_bar() -> None:
    progress = render.Progress("job-1")
    progress.update(Snapshot(job(status="failed", progress=40.0, error="out of memory")))
    assert progress.line().endswith("40%  failed  out of memory")


def test_details_explain_a_waiting_job_and_summarise_images() -> None:
    waiting = job(
        queue_position=3,
        waiting={"reason": "workers_busy", "message": "2 capable workers are busy"},
    )
    assert "waiting   workers_busy: 2 capable workers are busy" in render.job_details(waiting)
    assert "queue     3 ahead" in render.job_details(waiting)
    done = job(status="completed", result={"images": [{"filename": "a.png", "url": "http://x"}]})
    assert "result    1 image(s): 0 inline, 1 by URL" in render.job_details(done)


def test_watching_without_a_terminal_prints_one_line_per_item() -> None:
    assert render.event_line(progress_event(3, progress=50, message="half")) == (
        "progress  50%  half"
    )
    assert render.event_line(progress_event(4, "completed", run_ms=12)) == "completed run_ms=12"
    assert render.event_line(StreamGap("reconnected")).startswith("gap ")


def test_json_output_keeps_the_hubs_shapes() -> None:
    stream = io.StringIO()
    out = Output(json_mode=True, stream=stream)
    snapshot = Snapshot(job())
    out.record(event_json(snapshot))
    out.record(event_json(StreamGap("overflow")))
    assert stream.getvalue().splitlines() == [
        '{"type":"snapshot","job":{"id":"job-1","service_type":"simulation","status":"pending"}}',
        '{"type":"gap","reason":"overflow"}',
    ]
    assert not out.tty
