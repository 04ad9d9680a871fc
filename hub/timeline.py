"""A job's timeline for its dashboard page: its events from the stream, in order.

The job hash is the record of where a job is; the events say how it got there (each claim
with its worker and wait, progress, each failed attempt and its backoff, the outcome with
the run time). They are read back from the capped `events` stream within the job's own span
of time (shared/event_history.py), so a job older than the stream's window, or one that
shared its span with a very busy fleet, gets the events still found and the count of those
that are not. The events have the shape `/ws` delivers, so the page treats the history and
the live feed alike.
"""

from __future__ import annotations

from typing import Any, Final

from hub.events import Event
from shared.job import Job
from shared.pools import pool_of
from shared.reads import Reads

# Stream ids and `created_at` / `finished_at` come from the same Redis clock, but an id may
# be taken a little before or after the script's TIME: widen the span by this much.
MARGIN_MS: Final = 1000
BUDGET: Final = 2000  # stream entries read from each end of the span at most


async def job_timeline(reads: Reads, job: Job) -> dict[str, Any]:
    """The events found for `job` and how many of its `event_seq` events were not; `reads`
    is the read model of the job's pool (its stream holds the job's events)."""
    until = job.finished_at + MARGIN_MS if job.status.terminal and job.finished_at else None
    entries = await reads.history.of_job(
        job.id,
        since_ms=max(0, job.created_at - MARGIN_MS),
        until_ms=until,
        last_seq=job.event_seq,
        budget=BUDGET,
    )
    pool = pool_of(job.id)
    events = [Event.from_fields(entry_id, f, pool).to_wire() for entry_id, f in entries]
    found = {e["seq"] for e in events}
    return {
        "job_id": job.id,
        "event_seq": job.event_seq,
        "events": events,
        "missing": sum(1 for seq in range(1, job.event_seq + 1) if seq not in found),
    }
