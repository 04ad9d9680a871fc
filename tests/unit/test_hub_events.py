"""The event fan-out without Redis: filters, bounded buffers, gap-free job following."""

from __future__ import annotations

from typing import Any

import pytest

from hub.events import Event, EventHub, Overflow, follow_job
from shared.job import Job, JobStatus


def ev(job: str, seq: int, etype: str = "progress", customer: str = "c1") -> Event:
    return Event(
        id=f"{1000 + seq}-0", kind="job", type=etype, job_id=job, seq=seq, customer_id=customer
    )


def worker_ev() -> Event:
    return Event(id="5-0", kind="worker", type="worker_up", worker_id="w1")


def hub(buffer: int = 100) -> EventHub:
    return EventHub(None, buffer=buffer)  # type: ignore[arg-type]


async def test_filters_route_events_to_matching_subscribers() -> None:
    h = hub()
    by_job, by_customer, everything, nothing = (h.subscribe() for _ in range(4))
    by_job.follow_job("j1")
    by_customer.follow_customer("c2")
    everything.follow_everything()
    for e in (ev("j1", 1), ev("j2", 1, customer="c2"), worker_ev()):
        h.dispatch(e)
    assert [(await by_job.next(0)).job_id] == ["j1"]  # type: ignore[union-attr]
    assert await by_job.next(0.01) is None
    assert (await by_customer.next(0)).job_id == "j2"  # type: ignore[union-attr]
    assert [(await everything.next(0)).type for _ in range(3)] == [  # type: ignore[union-attr]
        "progress",
        "progress",
        "worker_up",
    ]
    assert await nothing.next(0.01) is None
    by_job.close()
    h.dispatch(ev("j1", 2))
    assert h.subscriber_count == 3


async def test_a_slow_subscriber_overflows_once_and_recovers() -> None:
    h = hub(buffer=2)
    sub = h.subscribe()
    sub.follow_job("j1")
    for seq in range(1, 5):
        h.dispatch(ev("j1", seq))
    with pytest.raises(Overflow):
        await sub.next(0)
    h.dispatch(ev("j1", 9))
    # What arrived after the loss is still delivered, in order, once the loss is reported.
    assert [(await sub.next(0)).seq for _ in range(2)] == [4, 9]  # type: ignore[union-attr]
    assert await sub.next(0.01) is None


class FakeBroker:
    def __init__(self, seq: int, status: JobStatus = JobStatus.ACTIVE) -> None:
        self.seq = seq
        self.status = status
        self.reads = 0

    async def get(self, job_id: str) -> Job:
        self.reads += 1
        return Job(
            id=job_id,
            service_type="s",
            priority=1,
            effective_priority=1,
            status=self.status,
            created_at=0,
            event_seq=self.seq,
        )


async def test_follow_job_drops_duplicates_and_repairs_gaps() -> None:
    h = hub()
    broker: Any = FakeBroker(seq=3)
    async with follow_job(h, broker, "j1", ping=0.01) as (snapshot, updates):
        assert snapshot is not None
        assert snapshot.event_seq == 3
        for seq in (2, 3, 4, 7):  # 2, 3 are in the snapshot; 7 jumps past 5 and 6
            h.dispatch(ev("j1", seq))
        first = await anext(updates)
        assert first is not None
        assert first.event is not None
        assert first.event.seq == 4
        broker.seq = 7
        repaired = await anext(updates)
        assert repaired is not None
        assert repaired.job is not None
        assert repaired.job.event_seq == 7
        h.dispatch(ev("j1", 8, "completed"))
        done = await anext(updates)
        assert done is not None
        assert done.terminal
        assert await anext(updates) is None  # quiet: a ping
    assert h.subscriber_count == 0


def lines_run_in_events(action: Any) -> int:
    """How many lines of hub/events.py `action` executes: the work done, not the time taken
    (which a shared machine would make flaky)."""
    import sys

    import hub.events as module

    target = module.__file__
    count = 0

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == target else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(previous)
    return count


@pytest.mark.parametrize("kind", ["customer", "job"])
def test_subscribing_costs_the_same_however_many_subscriptions_the_connection_has(
    kind: str,
) -> None:
    """Attack: one connection subscribes to thousands of customers (8,000 froze a hub for
    17.7 s, /health included), each subscribe rebuilding every index entry of the
    connection. Refused: each subscribe and unsubscribe costs the same however many the
    connection already has: doubling the subscriptions at most doubles the work (lines of
    hub/events.py run, counted)."""

    def work(n: int) -> int:
        h = hub()
        sub = h.subscribe()
        follow = sub.follow_customer if kind == "customer" else sub.follow_job
        unfollow = sub.unfollow_customer if kind == "customer" else sub.unfollow_job

        def subscribe_all() -> None:
            for i in range(n):
                follow(f"c{i}")
            for i in range(n):
                unfollow(f"c{i}")

        return lines_run_in_events(subscribe_all)

    small, large = work(300), work(600)
    assert large <= 2.1 * small, (small, large)
