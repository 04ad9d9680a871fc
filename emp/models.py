"""Jobs as the SDK hands them out: what a submission asks (`JobRequest`) and what the hub
says about a job (`Job`), as plain typed dataclasses.

These are the SDK's own models, not the hub's (`shared/job.py`): a client needs only the
JSON the API shows, and keeping them here means `import emp` pulls in no broker code, no
Redis client and no msgspec. Each model keeps the JSON it came from in `raw`, so a field
a newer hub adds is reachable before this package knows its name.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emp._fields import Fields
from emp.errors import JobFailed, ProtocolError
from emp.images import Image, images_of


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Finished, one way or another: no event follows (unless an operator retries)."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a pending job waits (GET /jobs/{id} only). `reason` is a stable code:
    backing_off, no_workers, no_capable_worker, workers_paused, workers_busy, queued."""

    reason: str
    message: str
    jobs_ahead: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as the hub last showed it. Listings and submission answers leave out `payload`
    and `result` (None here); `get` and `wait` carry both."""

    id: str
    service_type: str
    status: JobStatus
    customer_id: str | None = None
    priority: int | None = None
    effective_priority: int | None = None
    progress: float = 0.0
    message: str | None = None
    payload: Any = None
    result: Any = None
    error: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    max_retries: int | None = None
    timeout_seconds: float | None = None
    deadline: datetime | None = None
    tags: list[str] = field(default_factory=list)
    # requirements.models, else the models its payload names: a preference for a worker
    # that has them warm, never a requirement.
    preferred_models: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    claimed_at: datetime | None = None
    finished_at: datetime | None = None
    retry_at: datetime | None = None
    event_seq: int = 0
    queue_position: int | None = None
    waiting: Waiting | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def pool(self) -> str:
        """The pool the job is queued in, as its id says (`gpu-eu!job-...`; an id without
        `!` is the default pool's)."""
        pool, separator, _ = self.id.partition("!")
        return pool if separator else "default"

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.COMPLETED

    def images(self) -> list[Image]:
        """The images in the result (ComfyUI, AUTOMATIC1111): bytes when inline, else URL."""
        return images_of(self.result)

    def raise_for_status(self) -> Job:
        """Raise JobFailed when the job failed or was cancelled; return the job otherwise."""
        if self.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise JobFailed(self)
        return self

    @classmethod
    def from_json(cls, raw: Any) -> Job:
        f = Fields(raw, "job")
        waiting = f.raw.get("waiting")
        return cls(
            id=f.text("id"),
            service_type=f.text("service_type"),
            status=_status(f.text("status", "pending")),
            customer_id=f.opt_text("customer_id"),
            priority=f.opt_integer("priority"),
            effective_priority=f.opt_integer("effective_priority"),
            progress=f.number("progress"),
            message=f.opt_text("message") or None,
            payload=f.raw.get("payload"),
            result=f.raw.get("result"),
            error=f.opt_text("error"),
            worker_id=f.opt_text("worker_id"),
            attempts=f.integer("attempts"),
            max_retries=f.opt_integer("max_retries"),
            timeout_seconds=f.opt_number("timeout_seconds"),
            deadline=f.time("deadline"),
            tags=f.texts("tags"),
            preferred_models=f.texts("preferred_models"),
            created_at=f.time("created_at"),
            claimed_at=f.time("claimed_at"),
            finished_at=f.time("finished_at"),
            retry_at=f.time("retry_at"),
            event_seq=f.integer("event_seq"),
            queue_position=f.opt_integer("queue_position"),
            waiting=_waiting(waiting) if waiting is not None else None,
            raw=f.raw,
        )


def _status(text: str) -> JobStatus:
    try:
        return JobStatus(text)
    except ValueError:
        raise ProtocolError(f"job.status: unknown status {text!r}") from None


def _waiting(raw: Any) -> Waiting:
    f = Fields(raw, "job.waiting")
    return Waiting(f.text("reason"), f.text("message"), f.opt_integer("jobs_ahead"))


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of GET /jobs; `next_cursor` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """One submission, as `submit_many` takes them (`submit` takes the same as arguments).

    `id` makes the submission idempotent by itself: a second job with the same id is not
    created. `submit_many` gives every request without one a fresh id for that reason.
    """

    service_type: str
    payload: Mapping[str, Any] | None = None
    customer_id: str | None = None
    priority: int | None = None
    requirements: Mapping[str, Any] | None = None
    id: str | None = None
    max_retries: int | None = None
    timeout_seconds: float | None = None
    deadline: datetime | None = None
    tags: Sequence[str] = ()
    pool: str | None = None  # the pool to queue it in; None: the hub's rules or its default

    def to_json(self) -> dict[str, Any]:
        """The POST /jobs body; unset fields are left out so the hub's defaults apply."""
        body: dict[str, Any] = {"service_type": self.service_type}
        optional: dict[str, Any] = {
            "payload": dict(self.payload) if self.payload is not None else None,
            "customer_id": self.customer_id,
            "priority": self.priority,
            "requirements": dict(self.requirements) if self.requirements is not None else None,
            "id": self.id,
            "max_retries": self.max_retries,
            "timeout_seconds": self.timeout_seconds,
            # A naive datetime goes as written; the hub refuses it and names `deadline`.
            "deadline": self.deadline.isoformat() if self.deadline is not None else None,
            "tags": list(self.tags) or None,
            "pool": self.pool,
        }
        body.update((k, v) for k, v in optional.items() if v is not None)
        return body
