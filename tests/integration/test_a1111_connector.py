"""A1111Connector against the fake A1111 WebUI API."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fakes.a1111 import MODELS, FakeA1111
from tests.helpers import wait_until
from worker.connectors.a1111 import A1111Connector
from worker.connectors.base import JobCancelled, JobContext, JobFailed

FAST = {"A1111_POLL_SECONDS": "0.01", "A1111_CANCEL_GRACE_SECONDS": "5"}


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, percent: float, message: str) -> None:
        self.calls.append((percent, message))


@pytest.fixture
def fake() -> Iterator[FakeA1111]:
    with FakeA1111(step_delay=0.003) as server:
        yield server


@pytest.fixture
async def connector(fake: FakeA1111) -> AsyncIterator[A1111Connector]:
    a1111 = A1111Connector({"A1111_URL": fake.url, **FAST})
    yield a1111
    await a1111.close()


def job(payload: dict[str, Any]) -> JobContext:
    return JobContext(job_id="job-1", service_type="a1111", payload=payload)


async def run(connector: A1111Connector, payload: dict[str, Any]) -> tuple[Any, Progress]:
    progress = Progress()
    return await connector.run(job(payload), progress, asyncio.Event()), progress


async def test_legacy_payload_shape_generates_images(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    payload = {
        "endpoint": "txt2img",
        "method": "POST",
        "payload": {"prompt": "a cat", "steps": 5, "batch_size": 2},
    }
    result, _ = await run(connector, payload)
    assert len(result["images"]) == 2
    assert base64.b64decode(result["images"][0]).startswith(b"\x89PNG")
    assert result["parameters"] == {"prompt": "a cat", "steps": 5, "batch_size": 2}
    assert result["info"]["prompt"] == "a cat"  # parsed from A1111's JSON string
    assert result["info"]["steps"] == 5
    assert fake.requests == [("txt2img", {"prompt": "a cat", "steps": 5, "batch_size": 2})]


async def test_defaults_and_bare_body(connector: A1111Connector, fake: FakeA1111) -> None:
    result, _ = await run(connector, {"prompt": "a dog", "steps": 3})
    assert fake.requests == [("txt2img", {"prompt": "a dog", "steps": 3})]
    assert len(result["images"]) == 1


async def test_img2img_endpoint(connector: A1111Connector, fake: FakeA1111) -> None:
    image = base64.b64encode(b"png").decode()
    payload = {"endpoint": "img2img", "payload": {"init_images": [image], "steps": 2}}
    result, _ = await run(connector, payload)
    assert fake.requests[0][0] == "img2img"
    assert result["images"]


async def test_progress_is_reported_while_generating(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    fake.step_delay = 0.005
    result, progress = await run(connector, {"payload": {"steps": 30}})
    assert result["images"]
    percents = [p for p, _ in progress.calls]
    assert len(percents) >= 2
    assert percents == sorted(percents)
    assert all(0 <= p <= 99 for p in percents)
    assert any("/30" in m and "eta" in m for _, m in progress.calls)


async def test_cancel_interrupts_and_raises_cancelled(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    fake.step_delay = 0.01
    cancel, progress = asyncio.Event(), Progress()
    task = asyncio.create_task(connector.run(job({"payload": {"steps": 10_000}}), progress, cancel))
    await wait_until(lambda: progress.calls)
    cancel.set()
    await connector.interrupt("job-1")  # the worker's call; only one /interrupt is sent
    with pytest.raises(JobCancelled):
        await task
    assert fake.interrupts == 1
    assert not fake.generating  # the connector waited for A1111 to stop


async def test_task_cancellation_still_interrupts(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    fake.step_delay = 0.01
    progress = Progress()
    task = asyncio.create_task(
        connector.run(job({"payload": {"steps": 10_000}}), progress, asyncio.Event())
    )
    await wait_until(lambda: progress.calls)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.interrupts == 1


async def test_interrupt_for_a_job_not_in_flight_is_not_sent(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    await connector.interrupt("someone-else")
    assert fake.interrupts == 0


async def test_validation_error_422_lists_fields(connector: A1111Connector) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"payload": {"steps": "many"}})
    assert failed.value.retryable is False
    assert failed.value.message == (
        "A1111 rejected the request: body.steps: value is not a valid integer"
    )


async def test_out_of_memory_500_is_retryable(connector: A1111Connector, fake: FakeA1111) -> None:
    fake.fail = "oom"
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"payload": {"steps": 4}})
    assert failed.value.retryable is True
    assert "OutOfMemoryError" in failed.value.message
    assert "CUDA out of memory" in failed.value.message
    assert failed.value.details["status"] == 500


async def test_missing_init_image_is_not_retryable(connector: A1111Connector) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"endpoint": "img2img", "payload": {"steps": 2}})
    assert failed.value.retryable is False
    assert "Init image not found" in failed.value.message


@pytest.mark.parametrize(
    "spelling",
    [
        MODELS[1]["title"],
        "sd_xl_base_1.0",
        "sd_xl_base_1.0.safetensors",
        "31e35c80fc",
        "SD_XL_BASE_1.0",
    ],
)
async def test_model_spellings_resolve_to_the_title(
    connector: A1111Connector, fake: FakeA1111, spelling: str
) -> None:
    await run(connector, {"model": spelling, "payload": {"steps": 1}})
    body = fake.requests[0][1]
    assert body["override_settings"] == {"sd_model_checkpoint": MODELS[1]["title"]}


async def test_unknown_model_fails_without_retry(
    connector: A1111Connector, fake: FakeA1111
) -> None:
    payload = {"payload": {"steps": 1, "override_settings": {"sd_model_checkpoint": "nope.ckpt"}}}
    with pytest.raises(JobFailed) as failed:
        await run(connector, payload)
    assert failed.value.retryable is False
    assert "'nope.ckpt'" in failed.value.message
    assert "v1-5-pruned-emaonly" in failed.value.message  # lists what is there
    assert fake.requests == []


async def test_server_without_api_flag() -> None:
    with FakeA1111(api=False) as fake:
        a1111 = A1111Connector({"A1111_URL": fake.url, **FAST})
        try:
            with pytest.raises(JobFailed) as failed:
                await run(a1111, {"payload": {"steps": 1}})
            health = await a1111.health()
        finally:
            await a1111.close()
    assert "--api" in failed.value.message
    assert not health.ok
    assert "--api" in health.detail


async def test_basic_auth() -> None:
    with FakeA1111(auth=("user", "secret")) as fake:
        good = A1111Connector({"A1111_URL": fake.url, "A1111_AUTH": "user:secret", **FAST})
        bad = A1111Connector({"A1111_URL": fake.url, "A1111_AUTH": "user:wrong", **FAST})
        try:
            result, _ = await run(good, {"payload": {"steps": 1}})
            with pytest.raises(JobFailed, match="A1111_AUTH"):
                await run(bad, {"payload": {"steps": 1}})
        finally:
            await good.close()
            await bad.close()
    assert result["images"]


async def test_health_and_capabilities(connector: A1111Connector) -> None:
    assert connector.capabilities() == {}
    await connector.start()
    models = connector.capabilities()["models"]
    assert MODELS[0]["title"] in models
    assert "sd_xl_base_1.0" in models
    health = await connector.health()
    assert health.ok
    assert health.info == {"model": MODELS[0]["title"]}


async def test_unreachable_server() -> None:
    a1111 = A1111Connector({"A1111_URL": "http://127.0.0.1:9", **FAST})
    try:
        await a1111.start()  # must not raise
        assert not (await a1111.health()).ok
        with pytest.raises(JobFailed) as failed:
            await run(a1111, {"payload": {"steps": 1}})
    finally:
        await a1111.close()
    assert failed.value.retryable is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"endpoint": "../internal/ping"}, "endpoint"),
        ({"endpoint": 5}, "endpoint"),
        ({"method": "DELETE"}, "method"),
        ({"payload": [1, 2]}, "payload"),
        ({"model": ""}, "model"),
        ({"payload": {"override_settings": "x"}}, "override_settings"),
    ],
)
async def test_bad_payloads(connector: A1111Connector, payload: dict[str, Any], field: str) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(connector, payload)
    assert failed.value.retryable is False
    assert field in failed.value.message
