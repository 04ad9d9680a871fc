"""What the broker's scripts answer, as typed values: the reply types the Broker API returns
and the decoding of a `job:{id}` hash into a Job. Kept apart from the calls themselves so
the API module reads as the list of state transitions it offers.

The reply types are frozen msgspec Structs, not dataclasses: a worker builds a Claim for
every job and a submitter a Submitted for every submission, and a Struct is made about ten
times faster than a frozen dataclass (0.2 against 2.7 us for six fields on the 2-core dev
box), whose __init__ sets each field through object.__setattr__."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, cast

import msgspec
import orjson

from shared.errors import BrokerError
from shared.job import Job, JobStatus
from shared.requirements import Requirements
from shared.text import as_text
from shared.webhook import Webhook

Fence = Literal["ok", "stale", "cancelled"]
FailOutcome = Literal["retrying", "failed", "stale", "cancelled"]
WorkerState = Literal["active", "paused", "draining"]


class Submitted(msgspec.Struct, frozen=True):
    """`created_at` (ms, server time) and `position` (0-based queue rank at submission) are
    set for a job this call created, None for a repeated id or idempotency key.
    `preferred_models`: the request's, as the broker found them for the job (so a caller
    describing the job need not extract them from the payload again)."""

    job_id: str
    created: bool
    created_at: int | None = None
    position: int | None = None
    preferred_models: tuple[str, ...] = ()

    @classmethod
    def from_reply(cls, reply: Sequence[Any], preferred_models: tuple[str, ...] = ()) -> Submitted:
        if int(reply[0]) != 1:
            return cls(text(reply[1]) or "", False, preferred_models=preferred_models)
        return cls(text(reply[1]) or "", True, int(reply[2]), int(reply[3]), preferred_models)


class Claim(msgspec.Struct, frozen=True):
    job: Job
    token: str


class Rank(msgspec.Struct, frozen=True, order=True):
    """Where a job stands in the claim order, comparably across pools: the lower Rank is
    claimed first (a higher effective priority, then the earlier submission, in ms). Within
    one pool the claim order is exact by a per-pool sequence; across pools the submission
    millisecond is the finest order there is."""

    neg_priority: int
    created_at: int

    @classmethod
    def of(cls, priority: int, created_at: int) -> Rank:
        return cls(-priority, created_at)

    @property
    def priority(self) -> int:
        return -self.neg_priority


class Head(msgspec.Struct, frozen=True):
    """The job a claim would take next in one pool (Broker.peek): its id and its rank."""

    job_id: str
    rank: Rank


class NoClaim(msgspec.Struct, frozen=True):
    """Nothing to claim: `reason` is 'empty', 'paused' or 'draining' ('more' only from
    Broker.complete_and_claim and Broker.peek: the scan stopped at `offset`; 'worse' only
    from a claim with a floor: the best job, ranked `head`, ranks below it); `next_due_ms`
    is when the next backing-off retry becomes claimable (server time), if any."""

    reason: str
    next_due_ms: int | None
    offset: int | None = None
    head: Rank | None = None


class CancelResult(msgspec.Struct, frozen=True):
    outcome: Literal["cancelled", "unchanged", "missing"]
    was: str | None = None
    worker_id: str | None = None


class JobOwner(msgspec.Struct, frozen=True):
    """Whose a job is: its customer (None: none) and the worker holding it, if any."""

    customer_id: str | None
    worker_id: str | None = None


class ReapReport(msgspec.Struct, frozen=True):
    promoted: int = 0
    # (worker, job, outcome) and (job, outcome)
    recovered: list[tuple[str, str, str]] = msgspec.field(default_factory=list)
    timed_out: list[tuple[str, str]] = msgspec.field(default_factory=list)


def text(value: bytes | str | None) -> str | None:
    """A reply value as text, None kept: Lua's nil (and false) arrive as None."""
    return None if value is None else as_text(value)


def opt_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def parse_job(raw: Mapping[Any, Any]) -> Job:
    """Build a Job from the fields of a `job:{id}` hash."""
    try:
        # Every field as Redis sends it (bytes), decoded without a call per value: a
        # worker decodes the ~20 fields of each job it claims.
        h = {k.decode(): v.decode() for k, v in raw.items()}
    except AttributeError:  # text already, or a number or nil from a script
        h = {text(k) or "": text(v) or "" for k, v in raw.items()}
    return job_from_fields(h)


def parse_flat_job(flat: Sequence[bytes]) -> Job:
    """A Job from a script's flat list of the job hash's fields and values, as Redis sends
    them (bytes): decoded in two C-level passes, with no dict of bytes in between."""
    keys = map(bytes.decode, flat[::2])
    return job_from_fields(dict(zip(keys, map(bytes.decode, flat[1::2]), strict=True)))


@functools.lru_cache(maxsize=256)
def _requirements(text: str) -> Requirements:
    """Requirements are frozen, and a fleet's jobs share few documents: decoded once each."""
    return msgspec.json.decode(text, type=Requirements)


# A status by its value: JobStatus(value) goes through the Enum metaclass's __call__, ten
# times a dict lookup, for every job read.
_STATUSES: Final = {status.value: status for status in JobStatus}


def job_from_fields(h: Mapping[str, str]) -> Job:
    """Build a Job from the fields of a `job:{id}` hash, as text."""
    timeout_ms = opt_int(h.get("timeout_ms"))
    status = h["status"]
    return Job(
        id=h["id"],
        service_type=h["service_type"],
        customer_id=h.get("customer_id") or None,
        priority=int(h.get("priority") or 0),
        effective_priority=int(h.get("effective_priority") or 0),
        payload=orjson.loads(h["payload"]) if h.get("payload") else None,
        requirements=_requirements(h.get("requirements") or "{}"),
        preferred_models=orjson.loads(h["preferred_models"]) if h.get("preferred_models") else [],
        status=_STATUSES.get(status) or JobStatus(status),  # unknown: its ValueError
        progress=float(h.get("progress") or 0),
        message=h.get("message") or None,
        result=orjson.loads(h["result"]) if h.get("result") else None,
        error=h.get("error") or None,
        worker_id=h.get("worker_id") or None,
        attempts=int(h.get("attempts") or 0),
        max_retries=int(h.get("max_retries") or 0),
        timeout_seconds=timeout_ms / 1000 if timeout_ms is not None else None,
        deadline=opt_int(h.get("deadline")),
        tags=orjson.loads(h["tags"]) if h.get("tags") else [],
        created_at=int(h.get("created_at") or 0),
        claimed_at=opt_int(h.get("claimed_at")),
        finished_at=opt_int(h.get("finished_at")),
        retry_at=opt_int(h.get("retry_at")),
        event_seq=int(h.get("event_seq") or 0),
        webhook=msgspec.json.decode(h["webhook"], type=Webhook) if h.get("webhook") else None,
        held_by=h.get("held_by") or None,
        held_at=opt_int(h.get("held_at")),
        held_since=opt_int(h.get("held_since")),
        held_until=opt_int(h.get("held_until")),
    )


def fence(value: bytes | str) -> Fence:
    reply = text(value)
    if reply not in ("ok", "stale", "cancelled"):
        raise BrokerError(f"unexpected fenced reply {reply!r}")
    return cast(Fence, reply)


def worker_state(value: bytes | str) -> WorkerState:
    reply = text(value)
    if reply not in ("active", "paused", "draining"):
        raise BrokerError(f"unexpected worker state {reply!r}")
    return cast(WorkerState, reply)


def claim_reply(reply: Sequence[Any]) -> Claim | NoClaim:
    """claim.lua's answer: {'job', token, field, value, ...} or {'none', reason, due, next}
    (then the rank of the job not taken, for 'worse')."""
    if text(reply[0]) == "job":
        flat = reply[2:]
        if flat and isinstance(flat[0], bytes):
            job = parse_flat_job(flat)
        else:  # text already (a client that decodes replies)
            job = parse_job(dict(zip(flat[::2], flat[1::2], strict=True)))
        return Claim(job=job, token=text(reply[1]) or "")
    reason, due, nxt = text(reply[1]) or "", text(reply[2]), text(reply[3])
    head = Rank.of(int(reply[4]), int(reply[5])) if reason == "worse" else None
    return NoClaim(reason=reason, next_due_ms=opt_int(due), offset=opt_int(nxt), head=head)


def wake_reply(value: bytes | str) -> int | Claim:
    """A token popped from a doorbell: a wake-up's hop count, or a job handed to this
    worker, 'h|<token>|<JSON array of the job hash's fields and values>'
    (shared/lua/include/handoff.lua). A name may come twice, the later value being the
    one stored: the dict keeps it."""
    raw = text(value) or "0"
    if not raw.startswith("h|"):
        return int(raw)
    token, _, fields = raw[2:].partition("|")
    flat = orjson.loads(fields)  # text: a JSON array of strings
    return Claim(job=job_from_fields(dict(zip(flat[::2], flat[1::2], strict=True))), token=token)


def peek_reply(reply: Sequence[Any]) -> Head | NoClaim:
    """peek.lua's answer: {'job', id, priority, submitted_ms} or claim.lua's 'none' reply."""
    if text(reply[0]) == "job":
        return Head(text(reply[1]) or "", Rank.of(int(reply[2]), int(reply[3])))
    reason, due, nxt = text(reply[1]) or "", text(reply[2]), text(reply[3])
    return NoClaim(reason=reason, next_due_ms=opt_int(due), offset=opt_int(nxt))
