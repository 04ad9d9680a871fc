"""Event fan-out: one reader of each pool's Redis event stream per hub, many local subscribers.

Every state change is a Lua script that also XADDs an event to its pool's `events` stream,
so each stream is the single, ordered history of its pool, whichever hub or worker caused
it. Each hub process runs one `XREAD BLOCK` loop per pool it serves (on a Redis Cluster each
pool's stream is in its own slot, often on its own primary, so one XREAD could not read
them all) and hands each event to the local subscribers whose filter matches (a job id, a
customer, or everything). The pools' events are merged as they arrive: a job lives in one
pool, so each job's events still arrive in order; events of different pools have no order
between them, and never had one to keep. Subscribers never block the reader:
each has a bounded buffer, and one that falls behind is marked overflowed and must re-read
the job (the followers below do that by themselves).

The loop stays here because what it decides is the hub's: when to retry, whether the hub is
healthy, who gets which event. The reads themselves (the dedicated connection, XREAD and
its dead-link deadline) are shared/event_stream.py's, so no hub module sends a Redis command
and the stream's key comes from shared/keys.py like every other.

Per-job consistency. `follow_job` registers the subscription BEFORE it reads the job hash,
then passes on only events whose per-job `seq` is greater than the snapshot's `event_seq`.
Events that happened before the snapshot are already reflected in it, later ones arrive
through the stream, so a client sees no gap and no duplicate. A jump in `seq` (the reader
reconnected past trimmed entries, or the buffer overflowed) is repaired by a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import RedisError

from shared.broker import Broker
from shared.event_stream import EventStream
from shared.job import Job
from shared.outage import REDIS_OUTAGE
from shared.pools import DEFAULT_POOL

log = logging.getLogger("hub.events")

TERMINAL_TYPES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Event:
    """One stream entry. `ts_ms` is the Redis time the event was written (from its id)."""

    id: str
    kind: str
    type: str
    job_id: str | None = None
    seq: int = 0
    customer_id: str | None = None
    worker_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    pool: str = DEFAULT_POOL  # whose stream it came from (a job's is also in its id)

    @property
    def ts_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    @property
    def terminal(self) -> bool:
        return self.kind == "job" and self.type in TERMINAL_TYPES

    @classmethod
    def from_fields(cls, entry_id: str, f: Mapping[str, str], pool: str = DEFAULT_POOL) -> Event:
        try:
            data = orjson.loads(f.get("data") or "{}")
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):  # cjson encodes an empty table as []
            data = {}
        return cls(
            id=entry_id,
            kind=f.get("kind", "job"),
            type=f.get("type", ""),
            job_id=f.get("job") or None,
            seq=int(f.get("seq") or 0),
            customer_id=f.get("customer") or None,
            worker_id=f.get("worker") or data.get("worker_id") or None,
            data=data,
            pool=pool,
        )

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape WebSocket and SSE clients receive."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "event": self.type}
        if self.kind == "job":
            out.update(job_id=self.job_id, seq=self.seq, customer_id=self.customer_id)
        # `pool`: a worker registers in every pool it serves, so its events come once per
        # pool on a feed that covers several; this says which.
        out.update(worker_id=self.worker_id, data=self.data, ts=self.ts_ms, pool=self.pool)
        return out


class Overflow(Exception):
    """The subscriber fell behind and lost events; it must re-read what it follows."""


class Subscription:
    """A filtered, bounded queue of events for one local consumer."""

    def __init__(self, hub: EventHub, limit: int) -> None:
        self._hub = hub
        self._limit = limit
        self._items: deque[Event] = deque()
        self._wake = asyncio.Event()
        self.jobs: set[str] = set()
        self.customers: set[str] = set()
        self.everything = False
        self.overflowed = False
        self.closed = False

    def push(self, event: Event) -> None:
        if len(self._items) >= self._limit:
            self._items.clear()
            self.overflowed = True
        else:
            self._items.append(event)
        self._wake.set()

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, None after `timeout` seconds; raises Overflow once after a loss
        (before the events that arrived after it, which are newer than anything lost)."""
        if self.overflowed:
            self.overflowed = False
            raise Overflow
        while not self._items:
            if self.closed:
                return None
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        return self._items.popleft()

    @property
    def size(self) -> int:
        """How many job and customer selectors this subscription holds (the per-connection
        cap counts these)."""
        return len(self.jobs) + len(self.customers)

    # Each change touches only the index entry it concerns: rebuilding every entry of the
    # subscription on each change made N subscribes on one connection cost N^2 (8,000
    # customer subscriptions froze a hub for 17.7 s).

    def follow_job(self, job_id: str) -> None:
        if job_id not in self.jobs and not self.closed:
            self.jobs.add(job_id)
            self._hub.index(self._hub.by_job, job_id, self)

    def unfollow_job(self, job_id: str) -> None:
        if job_id in self.jobs:
            self.jobs.discard(job_id)
            self._hub.unindex(self._hub.by_job, job_id, self)

    def follow_customer(self, customer_id: str) -> None:
        if customer_id not in self.customers and not self.closed:
            self.customers.add(customer_id)
            self._hub.index(self._hub.by_customer, customer_id, self)

    def unfollow_customer(self, customer_id: str) -> None:
        if customer_id in self.customers:
            self.customers.discard(customer_id)
            self._hub.unindex(self._hub.by_customer, customer_id, self)

    def follow_everything(self, on: bool = True) -> None:
        self.everything = on and not self.closed
        self._hub.index_everything(self, self.everything)

    def end(self) -> None:
        """Wake the consumer with no more events to come (hub shutting down)."""
        self.closed = True
        self._wake.set()

    def close(self) -> None:
        self.end()
        self._hub.remove(self)


class EventHub:
    """Tails every pool's event stream and multiplexes them to this process's subscribers."""

    def __init__(
        self,
        streams: Mapping[str, EventStream] | EventStream,
        *,
        block_ms: int = 5000,
        batch: int = 500,
        buffer: int = 2000,
    ) -> None:
        """`streams`: each pool's stream by pool name (one stream alone: the default pool)."""
        if isinstance(streams, Mapping):
            self._streams = dict(streams)
        else:
            self._streams = {DEFAULT_POOL: streams}
        self._block_ms = block_ms
        self._batch = batch
        self._buffer = buffer
        self.by_job: dict[str, set[Subscription]] = {}
        self.by_customer: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        # Per pool: the last entry id read, and whether its reader is reading.
        self.last_ids: dict[str, str] = dict.fromkeys(self._streams, "0-0")
        self._healthy: dict[str, bool] = dict.fromkeys(self._streams, False)
        # Every pool's reader is reading (/ready); kept as a plain attribute.
        self.healthy = False

    def _set_healthy(self, pool: str, ok: bool) -> None:
        self._healthy[pool] = ok
        self.healthy = all(self._healthy.values())

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Begin after each stream's newest entry: the readers serve live events only."""
        for pool, stream in self._streams.items():
            self.last_ids[pool] = await stream.newest_id()
            self._healthy[pool] = True
        self.healthy = True
        for pool, stream in self._streams.items():
            stream.open()
            self._tasks.append(
                asyncio.create_task(self._run(pool, stream), name=f"emp-event-reader-{pool}")
            )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self._streams.values():
            await stream.close()
        self.end_all()

    def end_all(self) -> None:
        for sub in list(self._subscribers):
            sub.end()

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` for every event (metrics); it must be quick and not raise."""
        self._listeners.append(listener)

    # -- subscriptions ----------------------------------------------------------------

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._buffer)
        self._subscribers.add(sub)
        return sub

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @staticmethod
    def index(by: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
        by.setdefault(key, set()).add(sub)

    @staticmethod
    def unindex(by: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
        subs = by.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del by[key]

    def index_everything(self, sub: Subscription, on: bool) -> None:
        if on:
            self._everything.add(sub)
        else:
            self._everything.discard(sub)

    def remove(self, sub: Subscription) -> None:
        """Drop a closed subscription from every index: once, costing its own size."""
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        for job_id in sub.jobs:
            self.unindex(self.by_job, job_id, sub)
        for customer in sub.customers:
            self.unindex(self.by_customer, customer, sub)
        self._everything.discard(sub)

    def dispatch(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a metrics bug must not stop the fan-out
                log.exception("event listener failed")
        targets: set[Subscription] = set(self._everything)
        if event.kind == "job":
            if event.job_id:
                targets |= self.by_job.get(event.job_id, set())
            if event.customer_id:
                targets |= self.by_customer.get(event.customer_id, set())
        for sub in targets:
            sub.push(event)

    # -- the reader -------------------------------------------------------------------

    async def _run(self, pool: str, stream: EventStream) -> None:
        delay = 0.05
        while True:
            try:
                entries = await stream.read(
                    self.last_ids[pool], count=self._batch, block_ms=self._block_ms
                )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                REDIS_OUTAGE.failed("event reader", exc)
                self._set_healthy(pool, False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._set_healthy(pool, True)
            REDIS_OUTAGE.recovered()
            delay = 0.05
            for entry_id, fields in entries:
                self.last_ids[pool] = entry_id
                self.dispatch(Event.from_fields(entry_id, fields, pool))


@dataclass(slots=True)
class JobUpdate:
    """What a job follower yields: a full snapshot, or one event after the last one."""

    job: Job | None = None
    event: Event | None = None

    @property
    def terminal(self) -> bool:
        if self.event is not None:
            return self.event.terminal
        return self.job is not None and self.job.status.terminal


@contextlib.asynccontextmanager
async def follow_job(
    hub: EventHub, broker: Broker, job_id: str, *, ping: float | None = None
) -> AsyncIterator[tuple[Job | None, AsyncIterator[JobUpdate | None]]]:
    """Subscribe to one job: yields (snapshot, updates). `updates` produces gap-free,
    duplicate-free JobUpdates after the snapshot, and None every `ping` seconds of quiet.
    The snapshot is None when the job does not exist."""
    sub = hub.subscribe()
    sub.follow_job(job_id)
    try:
        job = await broker.get(job_id)
        last = job.event_seq if job is not None else 0

        async def updates() -> AsyncIterator[JobUpdate | None]:
            nonlocal last
            while True:
                try:
                    event = await sub.next(ping)
                except Overflow:
                    event = None
                    fresh = await broker.get(job_id)
                    if fresh is not None:
                        last = fresh.event_seq
                        yield JobUpdate(job=fresh)
                    continue
                if event is None:
                    if sub.closed:
                        return
                    yield None
                    continue
                if event.seq <= last:
                    continue
                if event.seq > last + 1:
                    fresh = await broker.get(job_id)
                    if fresh is None:
                        continue
                    last = fresh.event_seq
                    yield JobUpdate(job=fresh)
                    continue
                last = event.seq
                yield JobUpdate(event=event)

        yield job, updates()
    finally:
        sub.close()


async def until_finished(
    hub: EventHub, broker: Broker, job_id: str, wait: float, stop: asyncio.Event
) -> Job | None:
    """The job once it reaches a terminal state, or as it is after `wait` seconds (or when
    `stop` is set: the hub is shutting down); None when it does not exist. A long poll."""
    deadline = time.monotonic() + wait
    async with follow_job(hub, broker, job_id, ping=0.5) as (snapshot, updates):
        if snapshot is None or snapshot.status.terminal:
            return snapshot
        async for update in updates:
            if update is not None and update.terminal:
                break
            if time.monotonic() >= deadline or stop.is_set():
                break
    return await broker.get(job_id)
