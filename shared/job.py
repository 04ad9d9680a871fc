"""The job: what a client submits (`JobRequest`) and what the broker stores (`Job`)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from shared.errors import InvalidInput
from shared.model_refs import payload_models
from shared.pools import POOL_NAME
from shared.requirements import Requirements
from shared.validation import (
    SCOPE_SEPARATOR,
    CustomerId,
    JobId,
    Name,
    ServiceType,
    normalise_service,
    whole,
)
from shared.webhook import Webhook

MAX_PRIORITY = 100
# Effective priority (requested priority plus tier and urgency bonuses) may exceed the
# requested range; the queue score reserves room up to this value.
MAX_EFFECTIVE_PRIORITY = 1000
DEADLINE_MIN = datetime(1970, 1, 2, tzinfo=UTC)
DEADLINE_MAX = datetime(9999, 12, 30, tzinfo=UTC)

# A pool's name in a submission (shared/pools.py): where the job is queued. Which names a
# hub accepts is its POOLS setting, checked by the hub, not here.
PoolName = Annotated[
    str,
    msgspec.Meta(
        pattern=whole(POOL_NAME.pattern),
        description="The pool to queue the job in (one the hub serves, its POOLS); "
        "absent: the hub's HUB_POOL_RULES, else its default pool",
    ),
]


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """A submission, exactly the seed's body plus optional controls."""

    service_type: ServiceType
    customer_id: CustomerId | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=MAX_PRIORITY)] | None = None
    payload: dict[str, Any] = {}
    requirements: Requirements = Requirements()
    id: JobId | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 3600)] | None = None
    deadline: datetime | None = None
    tags: Annotated[list[Name], msgspec.Meta(max_length=16)] = []
    webhook: Webhook | None = None
    pool: PoolName | None = None

    def check_customer(self) -> None:
        """Isolation needs to know whose job it is. Checked at submission rather than at
        parsing, because a customer-bound hub token supplies the customer after parsing."""
        iso = self.requirements.customer_isolation
        if iso != "none" and not self.customer_id:
            raise InvalidInput("customer_id", f"required when customer_isolation is {iso!r}")

    def preferred_models(self) -> tuple[str, ...]:
        """The models it prefers a worker with them warm for: its `requirements.models` when
        it gives some, else those its payload names (shared/model_refs.py). A preference
        only: the matcher never reads them."""
        if self.requirements.models:
            return tuple(dict.fromkeys(self.requirements.models))
        return tuple(payload_models(self.service_type, self.payload))

    def __post_init__(self) -> None:
        service = normalise_service(self.service_type)
        if service != self.service_type:  # case-insensitive (shared/validation.py)
            msgspec.structs.force_setattr(self, "service_type", service)
        if self.deadline is not None:
            if self.deadline.tzinfo is None:
                raise InvalidInput("deadline", "must carry a UTC offset, e.g. 2026-01-01T12:00:00Z")
            # Out-of-range instants would not survive the round trip through epoch ms.
            if not DEADLINE_MIN <= self.deadline <= DEADLINE_MAX:
                raise InvalidInput("deadline", "must lie between 1970 and 9999 (UTC)")


def scoped_job_id(customer_id: str, chosen: str) -> str:
    """The stored id of a job a customer-bound client submitted as `chosen`: each customer
    has its own space of ids, so one customer can neither take nor probe another's (a
    shared space answered "id already in use" for a foreign id, and let an early
    submission reserve an id before its owner used it)."""
    return f"{customer_id}{SCOPE_SEPARATOR}{chosen}"


def ms_to_iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class Job(msgspec.Struct, kw_only=True):
    """A job as stored in `job:{id}`. Timestamps are epoch milliseconds (Redis server time)."""

    id: str
    service_type: str
    customer_id: str | None = None
    priority: int
    effective_priority: int
    payload: Any = None
    requirements: Requirements = Requirements()
    # The models a worker with them warm should take it for (shared/model_refs.py): its
    # requirements.models, else those its payload names. A preference, never a requirement.
    preferred_models: list[str] = []
    status: JobStatus
    progress: float = 0.0
    message: str | None = None
    result: Any = None
    error: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    max_retries: int = 3
    timeout_seconds: float | None = None
    deadline: int | None = None
    tags: list[str] = []
    created_at: int
    claimed_at: int | None = None
    finished_at: int | None = None
    retry_at: int | None = None
    event_seq: int = 0
    webhook: Webhook | None = None
    # A scheduling policy passed this pending job over (shared/scheduling/chooser.py):
    # which, when it last did, and for a bounded one (affinity, fit) since when and the
    # time from which the claim must take it first.
    held_by: str | None = None
    held_at: int | None = None
    held_since: int | None = None
    held_until: int | None = None

    def to_public(self) -> dict[str, Any]:
        """The JSON shape clients see: the seed's field names, ISO-8601 UTC timestamps."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        for field in (
            "created_at", "claimed_at", "finished_at", "retry_at", "deadline",
            "held_at", "held_since", "held_until",
        ):  # fmt: skip
            out[field] = ms_to_iso(out.get(field))
        return out
