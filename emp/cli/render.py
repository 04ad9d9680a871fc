"""Text for people: tables, a progress bar, and the summaries of a job, the fleet and its
statistics. Pure functions of the SDK's models, so what the terminal shows is testable
without a terminal (machine output is the hub's JSON, printed by emp/cli/output.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from emp.events import Event, JobEvent, Snapshot, StreamGap, WorkerEvent
from emp.fleet import Gpu, Percentiles, Stats, Worker
from emp.models import Job

MAX_CELL: Final = 48
BAR_WIDTH: Final = 30
NONE: Final = "-"


def clip(text: str, width: int = MAX_CELL) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, each cell clipped to MAX_CELL."""
    body = [[clip(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *body]
    ]


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else NONE


def percent(progress: float) -> str:
    return f"{progress:.0f}%"


def bar(progress: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(progress, 100.0)) / 100 * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


# -- jobs -------------------------------------------------------------------------------


def job_rows(jobs: Iterable[Job]) -> list[str]:
    headers = ("ID", "STATUS", "SERVICE", "CUSTOMER", "PRIORITY", "PROGRESS", "WORKER", "CREATED")
    return table(
        headers,
        (
            (
                job.id,
                str(job.status),
                job.service_type,
                job.customer_id or NONE,
                str(job.effective_priority if job.effective_priority is not None else NONE),
                percent(job.progress),
                job.worker_id or NONE,
                when(job.created_at),
            )
            for job in jobs
        ),
    )


def job_details(job: Job) -> list[str]:
    """`emp status`: every field a person asks about, one per line."""
    priority = NONE if job.priority is None else str(job.priority)
    if job.effective_priority is not None and job.effective_priority != job.priority:
        priority += f" (effective {job.effective_priority})"
    fields: list[tuple[str, str]] = [
        ("id", job.id),
        ("status", str(job.status)),
        ("service", job.service_type),
        ("customer", job.customer_id or NONE),
        ("priority", priority),
        ("progress", percent(job.progress) + (f"  {job.message}" if job.message else "")),
        ("worker", job.worker_id or NONE),
        ("attempts", f"{job.attempts} (max retries {job.max_retries})"),
        ("created", when(job.created_at)),
        ("claimed", when(job.claimed_at)),
        ("finished", when(job.finished_at)),
    ]
    if job.tags:
        fields.append(("tags", ", ".join(job.tags)))
    if job.queue_position is not None:
        fields.append(("queue", f"{job.queue_position} ahead"))
    if job.waiting is not None:
        fields.append(("waiting", f"{job.waiting.reason}: {job.waiting.message}"))
    if job.error:
        fields.append(("error", job.error))
    if job.result is not None:
        fields.append(("result", result_summary(job)))
    return [f"{name:<9} {value}" for name, value in fields]


def result_summary(job: Job) -> str:
    images = job.images()
    if images:
        inline = sum(1 for image in images if image.inline)
        return f"{len(images)} image(s): {inline} inline, {len(images) - inline} by URL"
    return clip(json.dumps(job.result, separators=(",", ":")), 200)


# -- watching one job -------------------------------------------------------------------

STATUS_AFTER: Final = {
    "accepted": "pending",
    "claimed": "active",
    "progress": "active",
    "completed": "completed",
    "failed": "failed",
    "retrying": "pending",
    "released": "pending",
    "cancelled": "cancelled",
}


class Progress:
    """A job's status, progress and message as its stream moves them along."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.status = "pending"
        self.progress = 0.0
        self.message = ""

    def update(self, item: Event) -> None:
        if isinstance(item, Snapshot):
            job = item.job
            self.status = str(job.status)
            self.progress = job.progress
            self.message = job.message or job.error or ""
        elif isinstance(item, JobEvent):
            self.status = STATUS_AFTER.get(item.type, self.status)
            if item.progress is not None:
                self.progress = item.progress
            if item.type == "completed":
                self.progress = 100.0
            self.message = item.message or item.error or self.message

    def line(self) -> str:
        text = f"{self.job_id}  {bar(self.progress)} {percent(self.progress):>4}  {self.status}"
        return text + (f"  {clip(self.message, 60)}" if self.message else "")


def event_line(item: Event) -> str:
    """One stream item as a log line (watching without a terminal)."""
    if isinstance(item, Snapshot):
        job = item.job
        return f"snapshot  {job.status} {percent(job.progress)}" + (
            f"  {job.message}" if job.message else ""
        )
    if isinstance(item, StreamGap):
        return f"gap       events may have been missed ({item.reason})"
    stamp = item.time.strftime("%H:%M:%S  ") if item.time is not None else ""
    if isinstance(item, WorkerEvent):
        return f"{stamp}{item.type:<9} {item.worker_id or NONE}"
    if item.progress is not None:
        details = percent(item.progress) + (f"  {item.message}" if item.message else "")
    else:
        details = " ".join(f"{k}={v}" for k, v in item.data.items())
    return f"{stamp}{item.type:<9} {details}".rstrip()


# -- the fleet --------------------------------------------------------------------------


def gpus(found: Sequence[Gpu]) -> str:
    if not found:
        return NONE
    kinds = Counter((gpu.name or "GPU", gpu.memory_gb) for gpu in found)
    return ", ".join(f"{n}x {name} ({memory:g} GB)" for (name, memory), n in kinds.items())


def worker_rows(workers: Iterable[Worker]) -> list[str]:
    return table(
        ("ID", "STATUS", "STATE", "GPU", "MODELS", "JOB"),
        (
            (
                w.id,
                w.status,
                w.state,
                gpus(w.gpus),
                ", ".join(w.models) or NONE,
                ", ".join(w.current_jobs) or NONE,
            )
            for w in workers
        ),
    )


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{name} {count}" for name, count in counts.items()) or NONE


def _timing(p: Percentiles) -> str:
    if not p.samples:
        return "no samples yet"
    return f"p50 {p.p50} ms  p90 {p.p90} ms  p99 {p.p99} ms  (of {p.samples} recent)"


def stats_lines(stats: Stats) -> list[str]:
    lines = [
        f"pending     {stats.pending} (claimable {stats.claimable}, "
        f"backing off {stats.backing_off})",
        f"  priority  {_counts(stats.pending_by_priority)}",
        f"  service   {_counts(stats.pending_by_service)}",
        f"jobs        {_counts(stats.jobs)}",
    ]
    for window, counters in stats.throughput.items():
        shown = {k: v for k, v in counters.items() if k != "run_ms"}
        lines.append(f"last {window:<6} {_counts(shown)}")
    lines += [
        f"wait        {_timing(stats.wait_ms)}",
        f"run         {_timing(stats.run_ms)}",
        f"workers     {stats.workers}  {_counts(stats.workers_by_status)}",
        f"  state     {_counts(stats.workers_by_state)}",
    ]
    return lines


def top_frame(url: str, stats: Stats, workers: Sequence[Worker]) -> list[str]:
    head = f"emp top  {url}  {when(stats.now)} UTC"
    return [head, "", *stats_lines(stats), "", *worker_rows(workers)]


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
