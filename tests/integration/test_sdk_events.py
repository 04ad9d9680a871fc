"""Event streams through the SDK, against a real hub and worker: a job's stream, a
customer's, everything's, and what each does when its connection is cut mid-way.

Cuts go through a TCP proxy (tests/tcp_proxy.py): paused, then cut, so the reconnect
waits until the job has moved on and events were certainly missed; then resumed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from emp import (
    AsyncClient,
    Client,
    Event,
    Forbidden,
    JobEvent,
    JobStatus,
    NotFound,
    Snapshot,
    StreamGap,
    Unauthorized,
    WorkerEvent,
)
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import OPERATOR
from tests.sdk_support import (
    ACME_TOKEN,
    LONG,
    OPERATOR_TOKEN,
    QUICK,
    RunningHub,
    client,
    hub_with_worker,
    proxied,
    proxy_to,
    sim,
)
from tests.worker_support import running_worker, worker_settings


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    async with hub_with_worker(redis_url, broker_settings) as running:
        yield running


def seqs_of(items: list[Event], job_id: str) -> list[int]:
    """The job's position after each item: an event's seq, a snapshot's event_seq."""
    out: list[int] = []
    for item in items:
        if isinstance(item, JobEvent) and item.job_id == job_id:
            out.append(item.seq)
        elif isinstance(item, Snapshot) and item.job.id == job_id:
            out.append(item.job.event_seq)
    return out


def ends(item: Event, job_id: str) -> bool:
    if isinstance(item, JobEvent):
        return item.job_id == job_id and item.terminal
    return isinstance(item, Snapshot) and item.job.id == job_id and item.terminal


def moved_on(emp: AsyncClient, job_id: str, to_seq: int) -> Callable[[], Awaitable[bool]]:
    """For wait_until: the job has written event `to_seq` (read past the proxy)."""

    async def check() -> bool:
        return (await emp.get(job_id)).event_seq >= to_seq

    return check


async def test_a_job_stream_is_a_snapshot_then_every_event_until_the_end(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    async with (
        hub_with_worker(redis_url, broker_settings, worker=False) as hub,
        client(hub.url) as emp,
    ):
        handle = await emp.submit("simulation", sim(steps=4))
        async with handle.events() as stream:
            first = await anext(stream)  # subscribed before any worker exists
            async with running_worker(worker_settings(redis_url, "w1")):
                rest = [item async for item in stream]
    assert isinstance(first, Snapshot)
    assert first.job.status is JobStatus.PENDING
    assert all(isinstance(item, JobEvent) for item in rest)
    events = [item for item in rest if isinstance(item, JobEvent)]
    assert [e.type for e in events] == ["claimed", *["progress"] * 4, "completed"]
    assert [e.progress for e in events if e.type == "progress"] == [25, 50, 75, 100]
    assert [e.message for e in events][1] == "step 1/4"
    assert seqs_of([first, *rest], handle.id) == list(range(1, 8))
    assert events[0].worker_id == "w1"


async def test_a_finished_jobs_stream_is_its_final_snapshot(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        job = await emp.run("simulation", sim(), timeout=30)
        items = [item async for item in emp.events(job.id)]
    (only,) = items
    assert isinstance(only, Snapshot)
    assert only.job.status is JobStatus.COMPLETED
    assert only.job.result == job.result


async def test_a_job_stream_resumes_after_its_connection_is_cut(hub: RunningHub) -> None:
    async with proxy_to(hub) as proxy, client(proxied(proxy)) as emp, client(hub.url) as direct:
        handle = await emp.submit("simulation", {"steps": 8, "step_ms": 150})
        items: list[Event] = []
        async with asyncio.timeout(30), handle.events() as stream:
            async for item in stream:
                items.append(item)
                if isinstance(item, JobEvent) and item.type == "progress":
                    break
            cut_at, before_cut = len(items), seqs_of(items, handle.id)[-1]
            proxy.pause()
            proxy.cut()
            moved: bool = await wait_until(moved_on(direct, handle.id, before_cut + 2), timeout=10)
            assert moved
            proxy.resume()
            items += [item async for item in stream]
    assert proxy.connections >= 3  # the submission's, the stream's first, its reconnect
    repair = items[cut_at]
    assert isinstance(repair, Snapshot)  # the missed events, as the job's state
    assert repair.job.event_seq >= before_cut + 2
    seqs = seqs_of(items, handle.id)
    assert seqs == sorted(set(seqs))  # nothing twice, nothing out of order
    assert ends(items[-1], handle.id)
    assert not any(isinstance(item, StreamGap) for item in items)


async def test_a_customer_stream_repairs_the_jobs_it_follows_after_a_reconnect(
    hub: RunningHub,
) -> None:
    async with (
        proxy_to(hub) as proxy,
        client(proxied(proxy), ACME_TOKEN) as emp,
        client(hub.url, ACME_TOKEN) as direct,
    ):
        handle = await emp.submit("simulation", {"steps": 8, "step_ms": 150})
        items: list[Event] = []
        async with asyncio.timeout(30), emp.events(customer_id="acme") as stream:
            async for item in stream:
                items.append(item)
                if isinstance(item, JobEvent) and item.type == "progress":
                    break
            cut_at, before_cut = len(items), seqs_of(items, handle.id)[-1]
            proxy.pause()
            proxy.cut()
            moved: bool = await wait_until(moved_on(direct, handle.id, before_cut + 2), timeout=10)
            assert moved
            proxy.resume()
            async for item in stream:
                items.append(item)
                if ends(item, handle.id):
                    break
    gap, repair = items[cut_at], items[cut_at + 1]
    assert gap == StreamGap("reconnected")
    assert isinstance(repair, Snapshot)
    assert repair.job.id == handle.id
    assert repair.job.event_seq >= before_cut + 2
    seqs = seqs_of(items, handle.id)
    assert seqs == sorted(set(seqs))


async def test_operators_follow_everything_worker_events_included(hub: RunningHub) -> None:
    async with (
        client(hub.url, OPERATOR_TOKEN) as operator,
        client(hub.url) as emp,
        hub.client() as http,
    ):
        handle = await emp.submit("simulation", LONG)
        seen: list[Event] = []
        async with asyncio.timeout(30), operator.events(everything=True) as stream:
            async for item in stream:
                seen.append(item)
                if isinstance(item, JobEvent) and item.type == "progress":
                    # The subscription is in place: a fleet change now must show up.
                    paused = await http.post("/workers/w1/pause", headers=OPERATOR)
                    assert paused.status_code == 200
                if isinstance(item, WorkerEvent):
                    break
        await handle.cancel()
    worker_event = seen[-1]
    assert isinstance(worker_event, WorkerEvent)
    assert (worker_event.type, worker_event.worker_id) == ("worker_state", "w1")
    assert worker_event.data["state"] == "paused"


async def test_only_operators_may_follow_everything(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        with pytest.raises(Forbidden) as refused:
            await anext(emp.events(everything=True))
    assert refused.value.field == "all"


async def test_a_stream_of_an_unknown_job_raises_not_found(hub: RunningHub) -> None:
    async with client(hub.url) as emp:
        with pytest.raises(NotFound):
            await anext(emp.events("no-such-job"))


async def test_a_refused_token_is_not_retried(hub: RunningHub) -> None:
    async with client(hub.url, "not-a-token") as stranger:
        with pytest.raises(Unauthorized) as refused:  # the hub closes before accepting
            await anext(stranger.events(customer_id="acme"))
    assert refused.value.field == "Authorization"


async def test_the_blocking_client_streams_a_job_to_its_end(hub: RunningHub) -> None:
    def follow() -> list[Event]:
        with Client(hub.url, token=ACME_TOKEN, retry=QUICK) as emp:
            handle = emp.submit("simulation", sim(steps=3, step_ms=50))
            with handle.events() as stream:
                return list(stream)

    items = await asyncio.to_thread(follow)
    assert isinstance(items[0], Snapshot)
    assert ends(items[-1], items[0].job.id)
    seqs = seqs_of(items, items[0].job.id)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
