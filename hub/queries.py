"""Read-only job queries: summaries, listings with a cursor, queue positions.

Listings walk the broker's own indexes (jobs:pending in queue order, jobs:active, and the
finished registries newest first) instead of scanning keys, and read each page's job hashes
in one pipelined round trip; the reads themselves are the read model's (shared/job_reads.py),
this module decides what a page is. Filters on service or customer are applied to what is
read, with a bounded amount of work per request: a page may come back with fewer than
`limit` jobs and still a `next_cursor`, like Redis SCAN. Positions are offsets into the indexes, so
a cursor is best effort while jobs move: a job may be seen twice or missed when it changes
status between two pages.

Over several pools (hub/pool_reads.py) a page is a merge of each pool's index in the one
reading order, and the cursor holds one offset per pool: how far into its own index each
pool has been read. A page never reads past the last entry it fetched from a pool that may
have more, so no pool's later entry can belong before one already given.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import orjson

from hub.pool_reads import merge, summaries
from shared.broker import Submitted
from shared.errors import InvalidInput
from shared.job import Job, JobRequest, ms_to_iso
from shared.job_reads import JobReads
from shared.pools import POOL_NAME
from shared.settings import BrokerSettings

STATUSES: Final = ("pending", "active", "completed", "failed", "cancelled")
# Listing every status: live work first, then the finished registries newest first.
ALL_ORDER: Final = ("active", "pending", "failed", "completed", "cancelled")


def public_summary(job: Job) -> dict[str, Any]:
    """A job without its (possibly large) payload and result."""
    out = job.to_public()
    out.pop("payload", None)
    out.pop("result", None)
    return out


async def summary_with_position(jobs: JobReads, job_id: str) -> dict[str, Any] | None:
    """One job's summary plus its queue position, in one round trip."""
    job, position = await jobs.summary_and_position(job_id)
    if job is None:
        return None
    out = public_summary(job)
    out["queue_position"] = position
    return out


def created_view(
    req: JobRequest, submitted: Submitted, effective: int, broker: BrokerSettings
) -> dict[str, Any]:
    """The summary of a job this request just created, built from the request and the
    submit script's reply (creation time, queue position) without reading the job back:
    the submit path is the hub's hottest."""
    created, rank, job_id = submitted.created_at, submitted.position, submitted.job_id
    deadline = int(req.deadline.timestamp() * 1000) if req.deadline is not None else None
    timeout = req.timeout_seconds or broker.job_timeout
    return {
        "id": job_id,
        "service_type": req.service_type,
        "customer_id": req.customer_id,
        "priority": req.priority,
        "effective_priority": effective,
        "requirements": msgspec.to_builtins(req.requirements),
        "preferred_models": list(submitted.preferred_models),
        "status": "pending",
        "progress": 0.0,
        "message": None,
        "error": None,
        "worker_id": None,
        "attempts": 0,
        "max_retries": broker.default_max_retries if req.max_retries is None else req.max_retries,
        "timeout_seconds": int(timeout * 1000) / 1000,
        "deadline": ms_to_iso(deadline),
        "tags": list(req.tags),
        "created_at": ms_to_iso(int(created)) if created is not None else None,
        "claimed_at": None,
        "finished_at": None,
        "retry_at": None,
        "event_seq": 1,
        "webhook": msgspec.to_builtins(req.webhook) if req.webhook is not None else None,
        "held_by": None,
        "held_at": None,
        "held_since": None,
        "held_until": None,
        "queue_position": rank,
    }


_BAD_CURSOR = "not a cursor returned by this API"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: the stage (which index of the listing's order) and, per
    pool, how far into that index it was read (a pool left out: from its start)."""

    stage: int
    offsets: Mapping[str, int] = field(default_factory=dict)

    def encode(self) -> str:
        offsets = {pool: n for pool, n in self.offsets.items() if n}
        raw = orjson.dumps([self.stage, offsets])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None, *, first_pool: str = "default") -> Cursor:
        """`first_pool` takes the offset of a cursor from before pools, `[stage, offset]`,
        which a client may still hold across an upgrade."""
        if not text:
            return cls(0)
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            stage, offsets = orjson.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput("cursor", _BAD_CURSOR) from None
        if isinstance(offsets, int) and not isinstance(offsets, bool):
            offsets = {first_pool: offsets}
        if not isinstance(stage, int) or isinstance(stage, bool) or stage < 0:
            raise InvalidInput("cursor", _BAD_CURSOR)
        if not isinstance(offsets, dict) or not all(
            isinstance(pool, str)
            and POOL_NAME.fullmatch(pool)
            and isinstance(n, int)
            and not isinstance(n, bool)
            and n >= 0
            for pool, n in offsets.items()
        ):
            raise InvalidInput("cursor", _BAD_CURSOR)
        return cls(stage, offsets)


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: str | None = None
    service_type: str | None = None
    customer_id: str | None = None

    def accepts(self, job: Job) -> bool:
        if self.status is not None and job.status != self.status:
            return False
        if self.service_type is not None and job.service_type != self.service_type:
            return False
        return self.customer_id is None or job.customer_id == self.customer_id


async def list_jobs(
    pools: Mapping[str, JobReads],
    flt: JobFilter,
    *,
    limit: int,
    cursor: str | None,
    budget: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of job summaries over `pools` (each pool's read model by name, at least one)
    and the cursor of the next page (None at the end).

    At most `budget` index entries are examined per call, so a selective filter over a
    long index returns short pages instead of one slow request.
    """
    names = list(pools)
    stages = (flt.status,) if flt.status else ALL_ORDER
    pos = Cursor.decode(cursor, first_pool=names[0])
    out: list[dict[str, Any]] = []
    examined = 0
    stage = pos.stage
    offsets = {name: pos.offsets.get(name, 0) for name in names}
    while stage < len(stages) and len(out) < limit and examined < budget:
        status = stages[stage]
        chunk = min(max(limit - len(out), 50), budget - examined)
        fetched = dict(
            zip(
                names,
                await asyncio.gather(
                    *(pools[n].scored_ids(status, offsets[n], chunk) for n in names)
                ),
                strict=True,
            )
        )
        refs = merge(status, fetched)
        if not refs:
            stage, offsets = stage + 1, dict.fromkeys(names, 0)
            continue
        # A pool that filled its chunk may have more entries: merging past its last one
        # fetched could put a later entry of another pool before one of its own.
        full = [n for n in names if len(fetched[n]) == chunk]
        last = {ref.pool: i for i, ref in enumerate(refs)}
        upto = min((last[n] for n in full), default=len(refs) - 1)
        window = refs[: upto + 1]
        taken = 0
        for ref, job in zip(window, await summaries(pools, window), strict=True):
            taken += 1
            offsets[ref.pool] += 1
            if job is not None and flt.accepts(job) and job.status == status:
                out.append(public_summary(job))
                if len(out) >= limit:
                    break
        examined += taken
        if not full and taken == len(refs):
            stage, offsets = stage + 1, dict.fromkeys(names, 0)
    more = stage < len(stages)
    return out, Cursor(stage, offsets).encode() if more else None
