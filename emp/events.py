"""What an event stream yields: job events, worker events, snapshots, and gaps.

The hub writes an event for every state change (docs/ARCHITECTURE.md, "The event
stream"). Job events carry `seq`, the job's own gap-free counter; the stream uses it to
drop duplicates and to notice missed events after a reconnect, and yields a `Snapshot`
(the whole job, as the hub has it now) wherever events were missed. A `StreamGap` says
that events may have been missed that no snapshot can repair: those of jobs the stream
had not seen yet, on a customer or fleet-wide stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from emp._fields import Fields
from emp.models import Job

TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})


def _ms_time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent:
    """One change of one job. `type`: accepted, claimed, progress, completed, failed,
    retrying, released, cancelled. `data` holds the type's details (progress and
    message; error and attempts; worker_id and run_ms; ...)."""

    type: str
    job_id: str
    seq: int
    customer_id: str | None = None
    worker_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def progress(self) -> float | None:
        """Percent done, on `progress` events."""
        value = self.data.get("progress")
        return float(value) if isinstance(value, int | float) else None

    @property
    def message(self) -> str | None:
        value = self.data.get("message")
        return value if isinstance(value, str) and value else None

    @property
    def error(self) -> str | None:
        value = self.data.get("error")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerEvent:
    """A fleet change (fleet-wide streams only). `type`: worker_up, worker_down,
    worker_state."""

    type: str
    worker_id: str | None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole job as the hub has it now: first on a job's stream, and again wherever
    events were missed. Events that follow continue from `job.event_seq`."""

    job: Job

    @property
    def terminal(self) -> bool:
        return self.job.terminal


@dataclass(frozen=True, slots=True)
class StreamGap:
    """Events may have been missed (`reason`: "reconnected" or "overflow") for jobs this
    stream had not seen before; re-read what matters (`jobs(...)`). Jobs it had seen are
    repaired by snapshots."""

    reason: str


Event = JobEvent | WorkerEvent | Snapshot | StreamGap


def parse_event(raw: Any) -> JobEvent | WorkerEvent:
    """One event in the hub's wire shape (`hub/events.py`, `Event.to_wire`)."""
    f = Fields(raw, "event")
    time = _ms_time(f.opt_integer("ts"))
    if f.text("kind", "job") == "job":
        return JobEvent(
            type=f.text("event"),
            job_id=f.text("job_id"),
            seq=f.integer("seq"),
            customer_id=f.opt_text("customer_id"),
            worker_id=f.opt_text("worker_id"),
            data=f.obj("data"),
            time=time,
            raw=f.raw,
        )
    return WorkerEvent(
        type=f.text("event"),
        worker_id=f.opt_text("worker_id"),
        data=f.obj("data"),
        time=time,
        raw=f.raw,
    )
