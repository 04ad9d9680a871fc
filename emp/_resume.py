"""How an event stream survives reconnects: the bookkeeping, without any I/O.

The hub serves live events only; after a reconnect it cannot replay what passed while the
client was away. What it does give is enough to resume exactly:

- every job event carries the job's own `seq` (1, 2, 3, ... without gaps), and the job
  hash says how far it is (`event_seq`);
- subscribing to one job sends a snapshot (the job hash) and then only events after it.

So the stream remembers the last `seq` it passed on for each job, and after a reconnect:
an event it already passed on (`seq <= last`) is dropped; a snapshot that says nothing new
is dropped; an event that skips ahead (`seq > last + 1`) means events were missed, and a
fresh snapshot (read over REST) replaces them. On a customer or fleet-wide stream the jobs
it was following are re-read at once after a reconnect (they may have finished meanwhile,
and no later event would say so), and a StreamGap tells the caller that jobs it had not
seen yet may have been missed.

The WebSocket loops (emp/_stream_sync.py, emp/_stream_async.py) feed each message to
`Resumer.feed` and carry out what it answers: yield an event, or read a job and hand it
to `Resumer.snapshot`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from emp._fields import Fields
from emp.errors import ApiError, api_error
from emp.events import Event, JobEvent, Snapshot, StreamGap, WorkerEvent, parse_event
from emp.models import Job

# Jobs whose last seq a stream remembers (a customer stream may see very many): the oldest
# are forgotten first, which costs at most a duplicate-check for a job quiet that long.
MAX_TRACKED: Final = 10_000
# Jobs re-read after a reconnect: the most recently active ones. The others are covered by
# the StreamGap that precedes them, and by a snapshot as soon as their next event shows a
# gap.
MAX_RESYNC: Final = 100


@dataclass(frozen=True, slots=True)
class Selector:
    """What a stream follows: one job, one customer's jobs, or everything (operator)."""

    job_id: str | None = None
    customer_id: str | None = None
    everything: bool = False

    def __post_init__(self) -> None:
        chosen = sum((self.job_id is not None, self.customer_id is not None, self.everything))
        if chosen != 1:
            raise ValueError("give exactly one of job_id, customer_id or everything=True")

    def subscribe_message(self) -> dict[str, Any]:
        if self.job_id is not None:
            return {"type": "subscribe", "job_id": self.job_id}
        if self.customer_id is not None:
            return {"type": "subscribe", "customer_id": self.customer_id}
        return {"type": "subscribe", "all": True}


@dataclass(frozen=True, slots=True)
class NeedSnapshot:
    """Read this job over REST and pass it to `Resumer.snapshot` (None if it is gone)."""

    job_id: str


Action = Event | NeedSnapshot


class Resumer:
    """The state of one logical stream across any number of connections."""

    def __init__(self, selector: Selector) -> None:
        self.selector = selector
        self.finished = False  # a one-job stream saw its job finish: stop
        self.subscribed = False  # the current connection's subscription is in place
        self._last: OrderedDict[str, int] = OrderedDict()
        self._ever_subscribed = False
        self._resync_due = False

    def subscribe(self) -> dict[str, Any]:
        """The message to send first on every connection, the first and each reconnect."""
        self.subscribed = False
        return self.selector.subscribe_message()

    def disconnected(self) -> None:
        """The connection ended; the next subscription must account for what passed."""
        self.subscribed = False
        if self._ever_subscribed:
            self._resync_due = True

    def feed(self, message: Any) -> list[Action]:
        """Everything one hub message calls for, in order."""
        f = Fields(message, "message")
        kind = f.text("type")
        if kind == "event":
            return self._event(parse_event(f.obj("event")))
        if kind == "snapshot":
            return [*self.snapshot(Job.from_json(f.obj("job")))]
        if kind == "subscribed":
            return self._subscribed()
        if kind == "overflow":  # the hub dropped events for this (slow) connection
            # A one-job stream gets a fresh snapshot from the hub itself.
            return [] if self.selector.job_id is not None else self._resync("overflow")
        if kind == "error":
            raise stream_error(Fields(f.obj("error"), "message.error"))
        return []  # welcome, pong, unsubscribed, and whatever a newer hub adds

    def snapshot(self, job: Job | None, job_id: str | None = None) -> list[Snapshot]:
        """A job's whole state: from the hub after subscribing, or read after a gap."""
        if job is None:  # expired, or no longer visible to this token
            if job_id is not None:
                self._last.pop(job_id, None)
            return []
        last = self._last.get(job.id)
        if last is not None and job.event_seq <= last:
            return []  # nothing the stream has not passed on already
        self._passed(job.id, job.event_seq, job.terminal)
        return [Snapshot(job)]

    def _event(self, event: JobEvent | WorkerEvent) -> list[Action]:
        if isinstance(event, WorkerEvent):
            return [event]
        last = self._last.get(event.job_id)
        if last is not None:
            if event.seq <= last:
                return []  # passed on before the reconnect, or reflected in a snapshot
            if event.seq > last + 1:
                # Missed events; the job hash reflects at least this one, since the script
                # that wrote the event wrote the hash too.
                return [NeedSnapshot(event.job_id)]
        self._passed(event.job_id, event.seq, event.terminal)
        return [event]

    def _subscribed(self) -> list[Action]:
        self.subscribed = True
        self._ever_subscribed = True
        if not self._resync_due:
            return []
        self._resync_due = False
        if self.selector.job_id is not None:
            return []  # the hub sends the job's snapshot next
        return self._resync("reconnected")

    def _resync(self, reason: str) -> list[Action]:
        recent = list(self._last)[-MAX_RESYNC:]
        return [StreamGap(reason), *(NeedSnapshot(job_id) for job_id in recent)]

    def _passed(self, job_id: str, seq: int, terminal: bool) -> None:
        if terminal and self.selector.job_id is not None:
            self.finished = True
        if terminal and self.selector.job_id is None:
            # Nothing follows a finished job but an operator's retry, which a stream may
            # take up afresh; forgetting it keeps the resync list to live jobs.
            self._last.pop(job_id, None)
            return
        self._last[job_id] = seq
        self._last.move_to_end(job_id)
        while len(self._last) > MAX_TRACKED:
            self._last.popitem(last=False)


def stream_error(f: Fields) -> ApiError:
    """An `error` message as the exception its REST twin would raise. The WebSocket
    protocol has no status codes; the field says which refusal it was."""
    field, message = f.text("field"), f.text("message")
    status = {"job_id": 404, "customer_id": 403, "all": 403}.get(field, 400)
    return api_error(status, field, message)
