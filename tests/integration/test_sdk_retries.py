"""What the SDK sends again, and what it must not, when an answer is lost on the way back
(a TCP proxy between the SDK and a real hub closes the connection where the answer should
come, after the hub has acted), and when no hub answers at all."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from emp import HubUnreachable, JobRequest, JobStatus, RetryPolicy
from shared.settings import BrokerSettings
from tests.sdk_support import (
    LONG,
    OPERATOR_TOKEN,
    RunningHub,
    client,
    hub_with_worker,
    proxied,
    proxy_to,
)


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    # No worker: the jobs stay pending, so what exists is exactly what was submitted.
    async with hub_with_worker(redis_url, broker_settings, worker=False) as running:
        yield running


async def every_job(hub: RunningHub) -> list[str]:
    async with client(hub.url, OPERATOR_TOKEN) as operator:
        return [job.id async for job in operator.jobs()]


async def test_a_submission_whose_answer_is_lost_makes_one_job(hub: RunningHub) -> None:
    async with proxy_to(hub) as proxy, client(proxied(proxy)) as emp:
        proxy.lose_next_reply()
        handle = await emp.submit("simulation", {"steps": 1})
    assert await every_job(hub) == [handle.id]
    assert not handle.created  # the hub had it from the first try: a repeat, answered 200
    assert handle.status is JobStatus.PENDING
    assert proxy.connections == 2


async def test_a_batch_whose_answer_is_lost_makes_each_job_once(hub: RunningHub) -> None:
    requests = [JobRequest(service_type="simulation") for _ in range(3)]
    async with proxy_to(hub) as proxy, client(proxied(proxy)) as emp:
        proxy.lose_next_reply()
        handles = await emp.submit_many(requests)
    assert sorted(await every_job(hub)) == sorted(h.id for h in handles)
    assert not any(h.created for h in handles)


async def test_a_read_whose_answer_is_lost_is_read_again(hub: RunningHub) -> None:
    async with proxy_to(hub) as proxy, client(proxied(proxy)) as emp:
        handle = await emp.submit("simulation", {})
        proxy.lose_next_reply()
        job = await emp.get(handle.id)
    assert job.id == handle.id
    assert job.payload == {}


async def test_a_cancel_whose_answer_is_lost_is_not_sent_again(hub: RunningHub) -> None:
    async with proxy_to(hub) as proxy, client(proxied(proxy)) as emp:
        handle = await emp.submit("simulation", LONG)
        proxy.lose_next_reply()
        with pytest.raises(HubUnreachable, match="may have carried it out"):
            await emp.cancel(handle.id)
        job = await emp.get(handle.id)
    assert job.status is JobStatus.CANCELLED  # it happened, once: a repeat would get a 409


async def test_no_hub_at_all_is_hub_unreachable_after_every_try() -> None:
    with socket.socket() as placeholder:  # a port nothing listens on
        placeholder.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    policy = RetryPolicy(attempts=3, backoff=0, max_backoff=0)
    async with client(url, retry=policy) as emp:
        with pytest.raises(HubUnreachable, match="after 3 tries"):
            await emp.get("job-1")
        with pytest.raises(HubUnreachable, match="after 3 tries"):
            await emp.cancel("job-1")  # never sent, so safe to try again
        with pytest.raises(HubUnreachable, match="event stream"):
            await anext(emp.events("job-1"))
