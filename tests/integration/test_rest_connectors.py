"""RestSyncConnector and RestAsyncConnector against a fake REST service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from shared.config import ConfigError
from tests.fakes.rest import FakeRest
from tests.helpers import wait_until
from worker.connectors.base import JobCancelled, JobContext, JobFailed
from worker.connectors.rest import RestAsyncConnector, RestSyncConnector


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, percent: float, message: str) -> None:
        self.calls.append((percent, message))


def job(payload: dict[str, Any], job_id: str = "job-1") -> JobContext:
    return JobContext(job_id=job_id, service_type="rest", payload=payload)


@pytest.fixture
def fake() -> Iterator[FakeRest]:
    with FakeRest() as server:
        yield server


@pytest.fixture
async def sync(fake: FakeRest) -> AsyncIterator[RestSyncConnector]:
    connector = RestSyncConnector(
        {"REST_SYNC_BASE_URL": fake.url, "REST_SYNC_AUTH_HEADER": "Bearer t0ken"}
    )
    yield connector
    await connector.close()


@pytest.fixture
async def async_(fake: FakeRest) -> AsyncIterator[RestAsyncConnector]:
    connector = RestAsyncConnector(
        {
            "REST_ASYNC_BASE_URL": fake.url,
            "REST_ASYNC_POLL_SECONDS": "0.005",
            "REST_ASYNC_CANCEL_PATH": "/api/cancel/{id}",
            "REST_ASYNC_HEALTH_PATH": "/health",
        }
    )
    yield connector
    await connector.close()


# --- sync -----------------------------------------------------------------------------------


async def test_sync_posts_job_id_and_payload(sync: RestSyncConnector, fake: FakeRest) -> None:
    progress = Progress()
    result = await sync.run(job({"text": "hi", "n": 2}), progress, asyncio.Event())
    assert result == {"echo": {"job_id": "job-1", "text": "hi", "n": 2}}
    assert fake.requests == [("POST", "/api/process", {"job_id": "job-1", "text": "hi", "n": 2})]
    assert fake.auth_headers == ["Bearer t0ken"]
    assert progress.calls == [(0.0, "POST /api/process")]


async def test_sync_get_sends_scalars_as_query(fake: FakeRest) -> None:
    connector = RestSyncConnector({"REST_SYNC_BASE_URL": fake.url, "REST_SYNC_METHOD": "get"})
    try:
        result = await connector.run(job({"q": "x", "nested": {}}), Progress(), asyncio.Event())
    finally:
        await connector.close()
    assert result == {"echo": {"job_id": "job-1", "q": "x"}}


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (422, False), (429, True), (503, True)]
)
async def test_sync_status_classification(
    sync: RestSyncConnector, fake: FakeRest, status: int, retryable: bool
) -> None:
    fake.sync_status = status
    with pytest.raises(JobFailed) as failed:
        await sync.run(job({}), Progress(), asyncio.Event())
    assert failed.value.retryable is retryable
    assert f"answered {status}" in failed.value.message
    assert f"status {status}" in failed.value.message  # the service's own error text


async def test_sync_connection_error_is_retryable() -> None:
    connector = RestSyncConnector({"REST_SYNC_BASE_URL": "http://127.0.0.1:9"})
    try:
        with pytest.raises(JobFailed) as failed:
            await connector.run(job({}), Progress(), asyncio.Event())
    finally:
        await connector.close()
    assert failed.value.retryable is True
    assert "cannot reach" in failed.value.message


async def test_sync_cancel_abandons_the_request(sync: RestSyncConnector, fake: FakeRest) -> None:
    fake.sync_delay = 30
    cancel = asyncio.Event()
    task = asyncio.create_task(sync.run(job({}), Progress(), cancel))
    await wait_until(lambda: fake.requests)
    cancel.set()
    with pytest.raises(JobCancelled):
        await task


async def test_sync_health(fake: FakeRest) -> None:
    plain = RestSyncConnector({"REST_SYNC_BASE_URL": fake.url})
    probed = RestSyncConnector({"REST_SYNC_BASE_URL": fake.url, "REST_SYNC_HEALTH_PATH": "/health"})
    missing = RestSyncConnector({"REST_SYNC_BASE_URL": fake.url, "REST_SYNC_HEALTH_PATH": "/nope"})
    try:
        assert (await plain.health()).ok
        health = await probed.health()
        assert health.ok
        assert health.info == {"ok": True}
        assert not (await missing.health()).ok
    finally:
        for connector in (plain, probed, missing):
            await connector.close()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REST_SYNC_SERVICE": "Bad Name"}, "REST_SYNC_SERVICE"),
        ({"REST_SYNC_BASE_URL": "localhost:8000"}, "REST_SYNC_BASE_URL"),
        ({"REST_SYNC_PATH": "api/process"}, "REST_SYNC_PATH"),
        ({"REST_SYNC_METHOD": "delete"}, "REST_SYNC_METHOD"),
        ({"REST_SYNC_TIMEOUT_SECONDS": "0"}, "REST_SYNC_TIMEOUT_SECONDS"),
    ],
)
def test_sync_bad_settings(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        RestSyncConnector(env)


# --- async ----------------------------------------------------------------------------------


async def test_async_submit_poll_result(async_: RestAsyncConnector, fake: FakeRest) -> None:
    fake.progress_step = 25
    progress = Progress()
    result = await async_.run(job({"text": "hi"}), progress, asyncio.Event())
    assert result == {"output": {"job_id": "job-1", "text": "hi"}}
    percents = [p for p, _ in progress.calls]
    assert percents == sorted(percents)
    assert percents[0] == 0.0
    assert 75.0 in percents
    assert progress.calls[0] == (0.0, "submitted as r1")
    paths = [path for _, path, _ in fake.requests]
    assert paths[0] == "/api/submit"
    assert paths[-1] == "/api/result/r1"


async def test_async_accepts_job_id_key(async_: RestAsyncConnector, fake: FakeRest) -> None:
    fake.id_key = "job_id"
    result = await async_.run(job({}), Progress(), asyncio.Event())
    assert result == {"output": {"job_id": "job-1"}}


async def test_async_remote_failure(async_: RestAsyncConnector, fake: FakeRest) -> None:
    fake.fail_remote = True
    with pytest.raises(JobFailed) as failed:
        await async_.run(job({}), Progress(), asyncio.Event())
    assert failed.value.retryable is True
    assert "remote model crashed" in failed.value.message


async def test_async_rejected_submission(async_: RestAsyncConnector, fake: FakeRest) -> None:
    fake.submit_status = 400
    with pytest.raises(JobFailed) as failed:
        await async_.run(job({}), Progress(), asyncio.Event())
    assert failed.value.retryable is False


async def test_async_cancel_calls_the_cancel_path(
    async_: RestAsyncConnector, fake: FakeRest
) -> None:
    fake.progress_step = 0  # never finishes on its own
    cancel, progress = asyncio.Event(), Progress()
    task = asyncio.create_task(async_.run(job({}), progress, cancel))
    await wait_until(lambda: any(m == "processing" for _, m in progress.calls))
    cancel.set()
    await async_.interrupt("job-1")
    with pytest.raises(JobCancelled):
        await task
    assert fake.cancelled == ["r1"]


async def test_async_deadline(fake: FakeRest) -> None:
    fake.progress_step = 0
    connector = RestAsyncConnector(
        {
            "REST_ASYNC_BASE_URL": fake.url,
            "REST_ASYNC_POLL_SECONDS": "0.005",
            "REST_ASYNC_TIMEOUT_SECONDS": "0.1",
        }
    )
    try:
        with pytest.raises(JobFailed, match=r"did not finish within 0\.1 s") as failed:
            await connector.run(job({}), Progress(), asyncio.Event())
    finally:
        await connector.close()
    assert failed.value.retryable is True


async def test_async_custom_paths_without_placeholder(fake: FakeRest) -> None:
    connector = RestAsyncConnector(
        {
            "REST_ASYNC_SERVICE": "my-async",
            "REST_ASYNC_BASE_URL": fake.url,
            "REST_ASYNC_STATUS_PATH": "/api/status",  # the id is appended
            "REST_ASYNC_RESULT_PATH": "/api/result/",
            "REST_ASYNC_POLL_SECONDS": "0.005",
        }
    )
    try:
        result = await connector.run(job({"a": 1}), Progress(), asyncio.Event())
    finally:
        await connector.close()
    assert connector.name == "my-async"
    assert result == {"output": {"job_id": "job-1", "a": 1}}


async def test_async_health(async_: RestAsyncConnector) -> None:
    assert (await async_.health()).ok
