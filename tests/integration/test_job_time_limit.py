"""A job's time limit, kept on the task that runs its connector (worker/time_limit.py): at
the limit the connector is interrupted and cancelled and the job fails as timed out; a
connector that swallows the cancellation is reported timed out after the grace without it;
the job's task itself is left as it was found. One timer stands for every running job's
limit: each still expires at its own time. Against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.broker import Broker, Claim
from shared.job import JobStatus
from tests.factories import caps, job
from tests.helpers import wait_until
from worker.connectors.base import Connector, JobContext, ProgressFn
from worker.job_runner import HeldJob, JobRunner


class Sleeper(Connector):
    """A long job that stops when cancelled, as a well-behaved connector does."""

    name = "sim"

    def __init__(self) -> None:
        self.interrupted: list[str] = []

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        await asyncio.sleep(3600)

    async def interrupt(self, job_id: str) -> None:
        self.interrupted.append(job_id)


class Stubborn(Sleeper):
    """Ignores every cancellation until `finish` is set, then returns a result."""

    def __init__(self) -> None:
        super().__init__()
        self.finish = asyncio.Event()
        self.cancellations = 0

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        while not self.finish.is_set():
            try:
                await self.finish.wait()
            except asyncio.CancelledError:
                self.cancellations += 1  # swallowed: this connector will not stop when asked
        return {"late": True}


class GivesUp(Sleeper):
    """Raises CancelledError by itself, without its task having been cancelled."""

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        raise asyncio.CancelledError


async def claimed(broker: Broker, timeout_seconds: float) -> HeldJob:
    await broker.submit(job("sim", timeout_seconds=timeout_seconds, max_retries=0))
    claim = await broker.claim("w1", caps(services=("sim",)))
    assert isinstance(claim, Claim)
    return HeldJob(job=claim.job, token=claim.token)


def runner(broker: Broker, *, cancel_grace: float = 10.0) -> JobRunner:
    return JobRunner(broker, "w1", progress_interval=0, cancel_grace=cancel_grace)


async def test_a_job_past_its_time_limit_is_interrupted_and_fails_as_timed_out(
    broker: Broker,
) -> None:
    held = await claimed(broker, timeout_seconds=0.2)
    connector = Sleeper()
    outcome = await runner(broker).run(held, connector)
    assert (outcome.status, outcome.error) == ("failed", "timed out after 0.2 s")
    assert connector.interrupted == [held.job.id]
    assert held.cancel.is_set()
    stored = await broker.get(held.job.id)
    assert stored is not None
    assert (stored.status, stored.error) == (JobStatus.FAILED, "timed out after 0.2 s")
    # The cancellation that stopped the connector was the limit's: the task running the
    # job is not left cancelled, and goes on awaiting as before.
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)


async def test_a_connector_that_ignores_cancellation_is_reported_timed_out_without_it(
    broker: Broker,
) -> None:
    held = await claimed(broker, timeout_seconds=0.2)
    connector = Stubborn()
    running = asyncio.create_task(runner(broker, cancel_grace=0.3).run(held, connector))

    async def failed() -> bool:
        stored = await broker.get(held.job.id)
        return stored is not None and stored.status == JobStatus.FAILED

    await wait_until(failed, timeout=10, message="the timeout is reported")
    assert not running.done(), "the connector still runs; its report did not wait for it"
    assert connector.cancellations == 1
    assert connector.interrupted == [held.job.id]
    connector.finish.set()
    outcome = await asyncio.wait_for(running, timeout=10)
    assert (outcome.status, outcome.error) == ("failed", "timed out after 0.2 s")
    stored = await broker.get(held.job.id)
    assert stored is not None
    # Reported once, as timed out: the late result is not taken.
    assert (stored.status, stored.error, stored.result) == (
        JobStatus.FAILED,
        "timed out after 0.2 s",
        None,
    )


async def test_each_running_job_expires_at_its_own_limit_whatever_the_order_they_began(
    broker: Broker,
) -> None:
    """The watch is armed for the first job's hour; the second job's shorter limit, begun
    later, must still fire at its time, and the first job's must not fire with it."""
    long_held = await claimed(broker, timeout_seconds=3600)
    short_held = await claimed(broker, timeout_seconds=0.2)
    connector = Sleeper()
    shared = runner(broker)
    long_running = asyncio.create_task(shared.run(long_held, connector))
    await asyncio.sleep(0)  # the long job's limit is set first
    outcome = await asyncio.wait_for(shared.run(short_held, connector), timeout=10)
    assert (outcome.status, outcome.error) == ("failed", "timed out after 0.2 s")
    assert connector.interrupted == [short_held.job.id]
    assert not long_held.cancel.is_set()
    assert not long_running.done()
    long_running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_running


async def test_a_job_within_its_limit_completes_and_is_not_cancelled_later(
    broker: Broker,
) -> None:
    held = await claimed(broker, timeout_seconds=0.2)

    class Quick(Sleeper):
        async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
            return {"ok": True}

    connector = Quick()
    outcome = await runner(broker).run(held, connector)
    assert outcome.status == "completed"
    # Past the limit nothing fires: the limit went with the job.
    later = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.4, later.set_result, None)
    await later
    assert not held.cancel.is_set()
    assert connector.interrupted == []
    stored = await broker.get(held.job.id)
    assert stored is not None
    assert (stored.status, stored.result) == (JobStatus.COMPLETED, {"ok": True})


async def test_a_connector_raising_cancelled_error_itself_releases_the_job(
    broker: Broker,
) -> None:
    held = await claimed(broker, timeout_seconds=60)
    outcome = await runner(broker).run(held, GivesUp())
    assert outcome.status == "released"
    stored = await broker.get(held.job.id)
    assert stored is not None
    assert stored.status == JobStatus.PENDING


async def test_cancelling_the_task_running_a_job_cancels_the_connector_with_it(
    broker: Broker,
) -> None:
    """As when the event loop closes: the cancellation is not taken for the connector's
    own, nothing is reported (the lease runs out, or the deregistration hands it back)."""
    held = await claimed(broker, timeout_seconds=60)
    started = asyncio.Event()
    stopped: list[bool] = []

    class Blocked(Sleeper):
        async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                stopped.append(True)

    running = asyncio.create_task(runner(broker).run(held, Blocked()))
    await asyncio.wait_for(started.wait(), timeout=10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert stopped == [True]
    stored = await broker.get(held.job.id)
    assert stored is not None
    assert stored.status == JobStatus.ACTIVE
