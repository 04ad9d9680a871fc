"""How an SDK event stream continues across reconnects (emp/_resume.py), message by
message: what it passes on, what it drops as already seen, and when it asks for a fresh
snapshot instead of events it missed."""

from __future__ import annotations

from typing import Any

import pytest

from emp import Forbidden, JobEvent, NotFound, Snapshot, StreamGap, WorkerEvent
from emp._resume import MAX_RESYNC, NeedSnapshot, Resumer, Selector
from emp.models import Job


def event(job_id: str, seq: int, kind: str = "progress", **data: Any) -> dict[str, Any]:
    wire = {"kind": "job", "event": kind, "job_id": job_id, "seq": seq, "data": data}
    return {"type": "event", "event": {**wire, "customer_id": "acme", "ts": 1_700_000_000_000}}


def job(job_id: str, seq: int, status: str = "active") -> dict[str, Any]:
    return {"id": job_id, "service_type": "simulation", "status": status, "event_seq": seq}


def snapshot(job_id: str, seq: int, status: str = "active") -> dict[str, Any]:
    return {"type": "snapshot", "job": job(job_id, seq, status)}


SUBSCRIBED = {"type": "subscribed"}


def seqs(actions: list[Any]) -> list[int]:
    return [a.seq if isinstance(a, JobEvent) else a.job.event_seq for a in actions]


def test_a_selector_needs_exactly_one_choice() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Selector()
    with pytest.raises(ValueError, match="exactly one"):
        Selector("j1", customer_id="acme")
    assert Selector("j1").subscribe_message() == {"type": "subscribe", "job_id": "j1"}
    assert Selector(everything=True).subscribe_message() == {"type": "subscribe", "all": True}


def test_a_job_stream_passes_the_snapshot_then_each_later_event_once() -> None:
    r = Resumer(Selector("j1"))
    assert r.subscribe() == {"type": "subscribe", "job_id": "j1"}
    assert r.feed({"type": "welcome", "role": "client"}) == []
    assert r.feed(SUBSCRIBED) == []
    first = r.feed(snapshot("j1", 3))
    assert [type(a) for a in first] == [Snapshot]
    assert seqs(r.feed(event("j1", 4))) == [4]
    assert r.feed(event("j1", 4)) == []  # a duplicate
    assert r.feed(event("j1", 2)) == []  # older than what was passed on
    assert not r.finished
    assert seqs(r.feed(event("j1", 5, "completed"))) == [5]
    assert r.finished


def test_after_a_reconnect_a_snapshot_with_nothing_new_is_dropped() -> None:
    r = Resumer(Selector("j1"))
    r.subscribe()
    r.feed(SUBSCRIBED)
    r.feed(snapshot("j1", 3))
    r.feed(event("j1", 4))
    r.disconnected()
    r.subscribe()
    assert r.feed(SUBSCRIBED) == []  # a one-job stream: the hub's snapshot follows
    assert r.feed(snapshot("j1", 4)) == []  # nothing happened while away
    assert seqs(r.feed(event("j1", 5))) == [5]


def test_after_a_reconnect_missed_events_come_as_one_snapshot() -> None:
    r = Resumer(Selector("j1"))
    r.subscribe()
    r.feed(SUBSCRIBED)
    r.feed(snapshot("j1", 3))
    r.disconnected()
    r.subscribe()
    r.feed(SUBSCRIBED)
    repaired = r.feed(snapshot("j1", 7, "completed"))
    assert [type(a) for a in repaired] == [Snapshot]
    assert seqs(repaired) == [7]
    assert r.finished


def test_an_event_that_skips_ahead_asks_for_a_snapshot() -> None:
    r = Resumer(Selector(customer_id="acme"))
    r.subscribe()
    r.feed(SUBSCRIBED)
    assert seqs(r.feed(event("j1", 2))) == [2]
    assert r.feed(event("j1", 5)) == [NeedSnapshot("j1")]
    fresh = Job.from_json(job("j1", 6))
    assert seqs(list(r.snapshot(fresh, "j1"))) == [6]
    assert r.feed(event("j1", 5)) == []  # reflected in the snapshot
    assert seqs(r.feed(event("j1", 7))) == [7]


def test_a_customer_stream_rereads_its_jobs_after_a_reconnect() -> None:
    r = Resumer(Selector(customer_id="acme"))
    r.subscribe()
    r.feed(SUBSCRIBED)
    r.feed(event("j1", 2))
    r.feed(event("j2", 3))
    r.feed(event("j3", 4, "completed"))  # finished: nothing more to repair
    r.disconnected()
    r.subscribe()
    assert r.feed(SUBSCRIBED) == [StreamGap("reconnected"), NeedSnapshot("j1"), NeedSnapshot("j2")]
    assert r.snapshot(Job.from_json(job("j1", 2)), "j1") == []  # unchanged
    assert r.snapshot(None, "j2") == []  # gone (expired)
    assert seqs(r.feed(event("j2", 9))) == [9]  # forgotten, so taken as it comes


def test_the_first_subscription_needs_no_repair() -> None:
    r = Resumer(Selector(customer_id="acme"))
    r.disconnected()  # a first connection that failed before subscribing
    r.subscribe()
    assert r.feed(SUBSCRIBED) == []


def test_a_resync_rereads_only_the_most_recently_active_jobs() -> None:
    r = Resumer(Selector(customer_id="acme"))
    r.subscribe()
    r.feed(SUBSCRIBED)
    for n in range(MAX_RESYNC + 10):
        r.feed(event(f"j{n}", 1))
    r.disconnected()
    r.subscribe()
    actions = r.feed(SUBSCRIBED)
    assert actions[0] == StreamGap("reconnected")
    assert len(actions) == 1 + MAX_RESYNC
    assert actions[-1] == NeedSnapshot(f"j{MAX_RESYNC + 9}")


def test_an_overflow_is_repaired_like_a_reconnect_except_on_a_job_stream() -> None:
    customer = Resumer(Selector(customer_id="acme"))
    customer.subscribe()
    customer.feed(SUBSCRIBED)
    customer.feed(event("j1", 1))
    overflow = {"type": "overflow", "message": "events were dropped"}
    assert customer.feed(overflow) == [StreamGap("overflow"), NeedSnapshot("j1")]
    one_job = Resumer(Selector("j1"))
    assert one_job.feed(overflow) == []  # the hub re-sends the job's snapshot itself


def test_worker_events_pass_as_they_come() -> None:
    r = Resumer(Selector(everything=True))
    wire = {"kind": "worker", "event": "worker_state", "worker_id": "w1", "data": {}, "ts": 0}
    (passed,) = r.feed({"type": "event", "event": wire})
    assert isinstance(passed, WorkerEvent)
    assert (passed.type, passed.worker_id) == ("worker_state", "w1")


def test_refusals_become_the_errors_rest_would_raise() -> None:
    r = Resumer(Selector("j1"))
    refusal = {"type": "error", "error": {"field": "job_id", "message": "no such job"}}
    with pytest.raises(NotFound, match="no such job"):
        r.feed(refusal)
    operator_only = {"type": "error", "error": {"field": "all", "message": "operator token"}}
    with pytest.raises(Forbidden):
        Resumer(Selector(everything=True)).feed(operator_only)
