"""Outputs to an S3-compatible store (worker/connectors/output_store.py), against moto's real
HTTP server on loopback: the recorded ComfyUI workflow's files and A1111's images land under
`{prefix}/{customer}/{job_id}/{n}-{name}` and come back as presigned URLs that a plain GET
downloads; a retry re-sends nothing; a store that is down fails the job retryably, naming the
store and the file; the secret key is in no log line and no result."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from shared.broker import Broker
from shared.config import ConfigError
from shared.job import JobStatus
from tests.factories import job as factory_job
from tests.fakes.a1111 import FakeA1111
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.s3_support import SECRET_KEY, LoopbackS3, loopback_s3
from tests.worker_support import make_worker, worker_settings
from worker.connectors.a1111 import A1111Connector
from worker.connectors.base import JobContext, JobFailed
from worker.connectors.comfyui import ComfyUIConnector
from worker.connectors.output_store import MIB, OutputStore, bytes_source

WORKFLOW: dict[str, Any] = load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]
FAST = {"COMFYUI_POLL_SECONDS": "0.02"}


@pytest.fixture(scope="module")
def s3() -> Iterator[LoopbackS3]:
    with loopback_s3() as store:
        yield store


@pytest.fixture(scope="module")
def comfy() -> Iterator[FakeComfyUI]:
    with FakeComfyUI(step_delay=0.001) as server:
        yield server


@pytest.fixture
async def connector(
    comfy: FakeComfyUI, s3: LoopbackS3, request: pytest.FixtureRequest
) -> AsyncIterator[ComfyUIConnector]:
    # A prefix per test: each test sees only its own objects in the shared bucket.
    connector = ComfyUIConnector(
        {"COMFYUI_URL": comfy.url, **FAST, **s3.env(prefix=request.node.name)}
    )
    yield connector
    await connector.close()


def job(job_id: str = "job-1", customer: str | None = "cust-1") -> JobContext:
    return JobContext(
        job_id=job_id, service_type="comfyui", payload={"workflow": WORKFLOW}, customer_id=customer
    )


async def no_progress(percent: float, message: str) -> None:
    return None


async def run(connector: ComfyUIConnector | A1111Connector, context: JobContext) -> Any:
    return await connector.run(context, no_progress, asyncio.Event())


def dead_endpoint() -> str:
    """The URL of a loopback port nothing listens on: a store that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def download(url: str) -> bytes:
    """What a customer does with a result: a plain GET, no credentials."""
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.content


async def test_comfyui_outputs_land_in_the_store_and_download_by_url(
    connector: ComfyUIConnector, comfy: FakeComfyUI, s3: LoopbackS3
) -> None:
    result = await run(connector, job())

    prefix = connector.store.store.prefix if connector.store else ""
    [image] = result["images"]
    assert s3.keys(prefix) == [f"{prefix}/cust-1/job-1/0-fixture_success_8bcd41_00001_.png"]
    original = download(f"{comfy.url}/view?filename={image['filename']}&type=output")
    stored = download(image["url"])
    assert stored == original
    assert image == {
        "node": "3",
        "filename": "fixture_success_8bcd41_00001_.png",
        "subfolder": "",
        "type": "output",
        "url": image["url"],
        "key": f"{prefix}/cust-1/job-1/0-fixture_success_8bcd41_00001_.png",
        "bytes": len(original),
        "sha256": hashlib.sha256(original).hexdigest(),
        "content_type": "image/png",
        "width": int.from_bytes(original[16:20], "big"),
        "height": int.from_bytes(original[20:24], "big"),
    }
    assert "X-Amz-Expires=86400" in image["url"]


async def test_every_output_of_a_job_is_stored_numbered_in_order(
    connector: ComfyUIConnector, s3: LoopbackS3
) -> None:
    graph = copy.deepcopy(WORKFLOW)
    graph["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "second"},
    }
    context = JobContext(
        job_id="job-2", service_type="comfyui", payload={"workflow": graph}, customer_id="cust-1"
    )
    result = await run(connector, context)

    images = sorted(result["images"], key=lambda image: image["key"])
    names = sorted(image["filename"] for image in images)
    assert names == ["fixture_success_8bcd41_00001_.png", "second_00001_.png"]
    prefix = f"{request_prefix(connector)}/cust-1/job-2/"
    assert s3.keys(prefix) == [image["key"] for image in images]
    assert sorted(key.removeprefix(prefix)[:2] for key in s3.keys(prefix)) == ["0-", "1-"]
    for image in images:
        data = download(image["url"])
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        assert image["key"].endswith("-" + image["filename"])


def request_prefix(connector: ComfyUIConnector) -> str:
    assert connector.store is not None
    return connector.store.store.prefix


async def test_inline_copies_only_with_an_inline_budget(comfy: FakeComfyUI, s3: LoopbackS3) -> None:
    env = {
        "COMFYUI_URL": comfy.url,
        **FAST,
        **s3.env("inline"),
        "OUTPUT_INLINE_MAX_BYTES": str(MIB),
    }
    connector = ComfyUIConnector(env)
    try:
        [image] = (await run(connector, job("job-inline")))["images"]
    finally:
        await connector.close()
    assert base64.b64decode(image["base64"]) == download(image["url"])


async def test_a_retried_job_sends_no_file_again(
    connector: ComfyUIConnector, s3: LoopbackS3
) -> None:
    assert connector.store is not None
    first = await run(connector, job())
    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.method)

    connector.store.client.event_hooks["request"].append(record)
    second = await run(connector, job())  # the same job, as its next attempt runs it

    assert sent == ["HEAD"]  # the object is there with the same ETag: nothing is re-sent
    assert len(s3.keys(connector.store.store.prefix)) == 1
    assert [i["sha256"] for i in second["images"]] == [i["sha256"] for i in first["images"]]
    assert download(second["images"][0]["url"]) == download(first["images"][0]["url"])


async def test_a_store_that_is_down_fails_the_job_retryably_naming_store_and_file(
    comfy: FakeComfyUI, s3: LoopbackS3, caplog: pytest.LogCaptureFixture
) -> None:
    dead = dead_endpoint()
    env = {**s3.env("down"), "OUTPUT_STORE_ENDPOINT_URL": dead, "OUTPUT_STORE_ATTEMPTS": "3"}
    connector = ComfyUIConnector({"COMFYUI_URL": comfy.url, **FAST, **env})
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(JobFailed) as failed:
            await run(connector, job("job-down"))
    finally:
        await connector.close()

    assert failed.value.retryable
    message = failed.value.message
    assert f"s3://{s3.bucket}/down at {dead}" in message
    assert "fixture_success_8bcd41_00001_.png" in message
    assert "ConnectError" in message
    assert "(3 tries)" in message
    assert caplog.text.count("retrying in") == 2
    assert SECRET_KEY not in message + caplog.text + json.dumps(failed.value.details)


async def test_a_worker_retries_a_job_whose_store_is_down_then_fails_it_saying_why(
    broker: Broker, redis_url: str, comfy: FakeComfyUI, s3: LoopbackS3
) -> None:
    dead = dead_endpoint()
    job_id = (
        await broker.submit(factory_job("comfyui", max_retries=1, payload={"workflow": WORKFLOW}))
    ).job_id
    env = {**s3.env("down"), "OUTPUT_STORE_ENDPOINT_URL": dead, "OUTPUT_STORE_ATTEMPTS": "2"}
    settings = worker_settings(redis_url, SERVICES="comfyui", COMFYUI_URL=comfy.url, **FAST, **env)
    await make_worker(settings, burst=True).run()

    failed = await broker.get(job_id)
    assert failed is not None
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 2)
    assert failed.error is not None
    assert failed.error.startswith(
        f"could not store output 'fixture_success_8bcd41_00001_.png' in s3://{s3.bucket}/down at {dead}"
    )


async def test_a_refusal_is_not_retried_and_says_why(comfy: FakeComfyUI, s3: LoopbackS3) -> None:
    env = {**s3.env(), "OUTPUT_STORE": "s3://no-such-bucket/x", "OUTPUT_STORE_ATTEMPTS": "5"}
    connector = ComfyUIConnector({"COMFYUI_URL": comfy.url, **FAST, **env})
    try:
        with pytest.raises(JobFailed, match="NoSuchBucket") as failed:
            await run(connector, job("job-refused"))
    finally:
        await connector.close()
    assert "tries" not in failed.value.message  # refused at once, not retried


async def test_the_secret_key_is_in_no_log_line_and_no_result(
    connector: ComfyUIConnector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = await run(connector, job("job-secret"))
    text = json.dumps(result) + caplog.text + repr(connector.store)
    assert SECRET_KEY not in text
    assert "X-Amz-Signature=" in result["images"][0]["url"]


def test_a_store_without_credentials_stops_the_worker_naming_the_setting(
    s3: LoopbackS3, tmp_path: Any
) -> None:
    env = {k: v for k, v in s3.env().items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    with pytest.raises(ConfigError, match="OUTPUT_STORE: needs credentials"):
        ComfyUIConnector(env)


async def test_large_files_go_in_parts_and_a_changed_file_is_replaced(s3: LoopbackS3) -> None:
    store = OutputStore.from_env({**s3.env("multipart"), "OUTPUT_STORE_PART_BYTES": str(5 * MIB)})
    assert store is not None
    data = bytes(range(256)) * (11 * MIB // 256)  # 11 MiB: three parts
    key = store.key_for("c", "big", 0, "video.mp4")
    try:
        stored = await store.put(key, lambda: bytes_source(data), "video/mp4")
        again = await store.put(key, lambda: bytes_source(data), "video/mp4")
        changed = await store.put(key, lambda: bytes_source(data[::-1]), "video/mp4")
        assert download(store.describe(changed)["url"]) == data[::-1]
    finally:
        await store.aclose()
    assert (stored.reused, again.reused, changed.reused) == (False, True, False)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.data is None  # never held whole
    assert s3.keys().count(key) == 1


async def test_a1111_images_land_in_the_store(s3: LoopbackS3) -> None:
    with FakeA1111(step_delay=0.001) as fake:
        connector = A1111Connector(
            {"A1111_URL": fake.url, "A1111_POLL_SECONDS": "0.01", **s3.env("a1111")}
        )
        try:
            payload = {
                "endpoint": "txt2img",
                "method": "POST",
                "payload": {"prompt": "a cat", "steps": 2, "batch_size": 2},
            }
            context = JobContext(
                job_id="job-a", service_type="a1111", payload=payload, customer_id="cust-2"
            )
            result = await run(connector, context)
        finally:
            await connector.close()
    images = result["images"]
    assert [i["key"] for i in images] == [
        "a1111/cust-2/job-a/0-image.png",
        "a1111/cust-2/job-a/1-image.png",
    ]
    for image in images:
        data = download(image["url"])
        assert data.startswith(b"\x89PNG")
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
        assert image["content_type"] == "image/png"
        assert image["bytes"] == len(data)
        assert "base64" not in image
