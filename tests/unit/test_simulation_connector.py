"""SimulationConnector: deterministic results, progress, failures, cancellation, validation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.config import ConfigError
from tests.helpers import wait_until
from worker.connectors.base import JobCancelled, JobContext, JobFailed
from worker.connectors.simulation import YIELD_EVERY, SimulationConnector


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, percent: float, message: str) -> None:
        self.calls.append((percent, message))


def job(**payload: Any) -> JobContext:
    return JobContext(job_id="j1", service_type="simulation", payload=payload)


async def run(connector: SimulationConnector, **payload: Any) -> tuple[Any, Progress]:
    progress = Progress()
    return await connector.run(job(**payload), progress, asyncio.Event()), progress


async def test_result_and_progress_are_deterministic() -> None:
    result, progress = await run(SimulationConnector({}), steps=4, step_ms=1, result={"x": [1]})
    assert result == {"steps": 4, "result": {"x": [1]}, "worker_service": "simulation"}
    assert progress.calls == [
        (25.0, "step 1/4"),
        (50.0, "step 2/4"),
        (75.0, "step 3/4"),
        (100.0, "step 4/4"),
    ]


async def test_defaults_are_five_steps() -> None:
    result, progress = await run(SimulationConnector({}), step_ms=0)
    assert result == {"steps": 5, "result": None, "worker_service": "simulation"}
    assert len(progress.calls) == 5


async def test_zero_step_ms_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: every wait the connector could use is replaced, and the only
    awaits allowed are zero-length yields to the event loop, one per YIELD_EVERY steps."""

    async def no_waiting(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("step_ms=0 must not wait")

    real_sleep = asyncio.sleep
    sleeps: list[float] = []

    async def counted_sleep(delay: float, result: Any = None) -> Any:
        sleeps.append(delay)
        return await real_sleep(0, result)

    for name in ("timeout", "wait", "wait_for"):
        monkeypatch.setattr(asyncio, name, no_waiting)
    monkeypatch.setattr(asyncio, "sleep", counted_sleep)
    result, progress = await run(SimulationConnector({}), steps=10_000, step_ms=0)
    assert result["steps"] == 10_000
    assert len(progress.calls) == 10_000
    assert sleeps == [0] * (10_000 // YIELD_EVERY)


async def test_service_name_from_environment() -> None:
    connector = SimulationConnector({"SIMULATION_SERVICE_NAME": "sim-a"})
    assert connector.name == "sim-a"
    result, _ = await run(connector, steps=1, step_ms=0)
    assert result["worker_service"] == "sim-a"


def test_bad_service_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SIMULATION_SERVICE_NAME"):
        SimulationConnector({"SIMULATION_SERVICE_NAME": "Not Valid"})


async def test_fail_after_steps_is_retryable_by_default() -> None:
    progress = Progress()
    with pytest.raises(JobFailed) as failed:
        await SimulationConnector({}).run(
            job(steps=2, step_ms=0, fail="model exploded"), progress, asyncio.Event()
        )
    assert failed.value.message == "model exploded"
    assert failed.value.retryable is True
    assert len(progress.calls) == 2


async def test_fail_can_be_non_retryable_and_early() -> None:
    progress = Progress()
    with pytest.raises(JobFailed) as failed:
        await SimulationConnector({}).run(
            job(steps=5, step_ms=0, fail="bad input", fail_retryable=False, fail_at_step=3),
            progress,
            asyncio.Event(),
        )
    assert failed.value.retryable is False
    assert failed.value.details == {"step": 3}
    assert [m for _, m in progress.calls] == ["step 1/5", "step 2/5"]


async def test_cancel_during_a_step_returns_promptly() -> None:
    """Counted, not timed: once cancelled, the run ends within a few turns of the event loop,
    with no timer firing (the step would take a minute), however slow the machine."""
    cancel, progress = asyncio.Event(), Progress()
    task = asyncio.create_task(
        SimulationConnector({}).run(job(steps=3, step_ms=60_000), progress, cancel)
    )
    await asyncio.sleep(0)  # one loop turn: the task runs into its first step's wait
    assert not task.done()
    cancel.set()
    turns = 0
    while not task.done() and turns < 20:
        await asyncio.sleep(0)  # a bare yield: no timer can be what ends the wait
        turns += 1
    assert task.done(), f"still running {turns} loop turns after the cancel"
    with pytest.raises(JobCancelled, match="during step 1/3"):
        await task
    assert progress.calls == []


async def test_cancel_between_instant_steps() -> None:
    cancel = asyncio.Event()
    calls: list[float] = []

    async def progress(percent: float, message: str) -> None:
        calls.append(percent)
        if len(calls) == 3:
            cancel.set()

    with pytest.raises(JobCancelled):
        await SimulationConnector({}).run(job(steps=10, step_ms=0), progress, cancel)
    assert len(calls) == 3


async def test_progress_arrives_while_running() -> None:
    progress = Progress()
    task = asyncio.create_task(
        SimulationConnector({}).run(job(steps=3, step_ms=5), progress, asyncio.Event())
    )
    await wait_until(lambda: len(progress.calls) >= 1)
    assert (await task)["steps"] == 3


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"steps": "5"}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": -1}, "steps"),
        ({"step_ms": "fast"}, "step_ms"),
        ({"step_ms": -5}, "step_ms"),
        ({"step_ms": float("nan")}, "step_ms"),
        ({"fail": 42}, "fail"),
        ({"fail": "x", "fail_retryable": "no"}, "fail_retryable"),
        ({"fail_at_step": 1.5}, "fail_at_step"),
    ],
)
async def test_bad_payload_fields_are_named_and_not_retryable(
    payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(SimulationConnector({}), **payload)
    assert failed.value.retryable is False
    assert failed.value.message.startswith(f"payload.{field}:")
    assert failed.value.details == {"field": field}


async def test_zero_steps_completes_at_once() -> None:
    result, progress = await run(SimulationConnector({}), steps=0, result="r")
    assert result == {"steps": 0, "result": "r", "worker_service": "simulation"}
    assert progress.calls == []
