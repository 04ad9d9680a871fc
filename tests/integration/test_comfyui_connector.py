"""ComfyUIConnector against the fake ComfyUI (which tests/integration/test_fake_comfyui.py holds
to the recordings of a real one): results, errors, cancellation, reconnects, health."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.helpers import wait_until
from worker.connectors.base import JobCancelled, JobContext, JobFailed
from worker.connectors.comfyui import ComfyUIConnector

WORKFLOW: dict[str, Any] = load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]
FAST = {
    "COMFYUI_POLL_SECONDS": "0.02",
    "COMFYUI_CANCEL_GRACE_SECONDS": "5",
    "COMFYUI_RECONNECT_SECONDS": "5",
}


def workflow(steps: int = 5, color: int = 1) -> dict[str, Any]:
    graph = copy.deepcopy(WORKFLOW)
    graph["1"]["inputs"]["color"] = color  # a different colour: no cache hits across tests
    graph["2"]["inputs"]["steps"] = steps
    return graph


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    async def __call__(self, percent: float, message: str) -> None:
        self.calls.append((percent, message))

    @property
    def percents(self) -> list[float]:
        return [p for p, _ in self.calls]

    def saw(self, text: str) -> bool:
        return any(text in m for _, m in self.calls)


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with FakeComfyUI(step_delay=0.002) as server:
        yield server


@pytest.fixture
async def connector(fake: FakeComfyUI) -> AsyncIterator[ComfyUIConnector]:
    comfy = ComfyUIConnector({"COMFYUI_URL": fake.url, **FAST})
    yield comfy
    await comfy.close()


def job(payload: dict[str, Any], job_id: str = "job-1") -> JobContext:
    return JobContext(job_id=job_id, service_type="comfyui", payload=payload)


async def run(
    connector: ComfyUIConnector, payload: dict[str, Any], cancel: asyncio.Event | None = None
) -> tuple[Any, Progress]:
    progress = Progress()
    result = await connector.run(job(payload), progress, cancel or asyncio.Event())
    return result, progress


async def test_success_returns_outputs_and_inline_image(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    result, progress = await run(connector, {"workflow": workflow()})

    [body] = fake.prompts
    assert fake.events == [f"ws:{body['client_id']}", f"prompt:{result['prompt_id']}"]
    assert body["prompt_id"] == result["prompt_id"]
    assert result["outputs"]["3"]["images"][0]["filename"] == "fixture_success_8bcd41_00001_.png"
    [image] = result["images"]
    data = base64.b64decode(image["base64"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert image == {
        "node": "3",
        "filename": "fixture_success_8bcd41_00001_.png",
        "subfolder": "",
        "type": "output",
        "content_type": "image/png",
        "bytes": len(data),
        "base64": image["base64"],
    }
    assert progress.percents == sorted(progress.percents)
    assert min(progress.percents) >= 0
    assert max(progress.percents) <= 99
    assert progress.saw("node 2 (SlowImage): 5/5")


async def test_files_over_the_inline_budget_become_references(fake: FakeComfyUI) -> None:
    comfy = ComfyUIConnector({"COMFYUI_URL": fake.url, "COMFYUI_MAX_INLINE_BYTES": "10", **FAST})
    try:
        result, _ = await run(comfy, {"workflow": workflow()})
    finally:
        await comfy.close()
    [image] = result["images"]
    assert "base64" not in image
    assert image["bytes"] > 10
    async with httpx.AsyncClient() as client:
        fetched = await client.get(image["url"])
    assert len(fetched.content) == image["bytes"]


async def test_fully_cached_prompt_completes(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    first, _ = await run(connector, {"workflow": workflow()})
    second, progress = await run(connector, {"workflow": workflow()})
    cached = fake.history[second["prompt_id"]]["status"]["messages"][1]
    assert cached == ["execution_cached", cached[1]]
    assert cached[1]["nodes"] == ["1", "2", "3"]
    assert second["outputs"] == first["outputs"]
    assert second["images"][0]["base64"] == first["images"][0]["base64"]
    assert progress.saw("3 of 3 nodes cached")


async def test_legacy_prompt_key_and_bare_graph_are_accepted(connector: ComfyUIConnector) -> None:
    legacy, _ = await run(connector, {"prompt": workflow(color=2)})
    bare, _ = await run(connector, workflow(color=3))
    assert legacy["images"]
    assert bare["images"]


def _recorded_rejections() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    cases = []
    for name in ("prompt_error_missing_input", "prompt_error_unknown_node", "prompt_error_other"):
        for step in load_recording(name)["steps"]:
            body = step["request"].get("json") or {}
            if step["response"]["status"] == 400 and "prompt" in body:
                cases.append((step.get("note", name), body["prompt"], step["response"]["json"]))
    return cases


@pytest.mark.parametrize(
    ("note", "graph", "expected"),
    _recorded_rejections(),
    ids=[c[0] for c in _recorded_rejections()],
)
async def test_validation_errors_are_not_retryable_and_name_the_nodes(
    connector: ComfyUIConnector,
    fake: FakeComfyUI,
    note: str,
    graph: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"workflow": graph})
    assert failed.value.retryable is False
    assert expected["error"]["message"] in failed.value.message
    assert set(failed.value.details) == set(expected["node_errors"])
    for node_id, info in expected["node_errors"].items():
        assert f"node {node_id} ({info['class_type']})" in failed.value.message
        assert failed.value.details[node_id]["errors"][0]["type"] == info["errors"][0]["type"]
    assert fake.interrupts == []  # nothing was queued, so nothing is stopped


async def test_server_error_on_submit_is_retryable(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.prompt_500 = True
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"workflow": workflow()})
    assert failed.value.retryable is True
    assert "Server got itself in trouble" in failed.value.message


async def test_execution_error_names_node_and_exception(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.fail_at_step = 3
    with pytest.raises(JobFailed) as failed:
        await run(connector, {"workflow": workflow()})
    assert failed.value.retryable is True
    assert failed.value.message == (
        "ComfyUI node 2 (SlowImage) failed: ValueError: "
        "SlowImage: deliberate failure at step 3 of 5"
    )
    assert failed.value.details["node_type"] == "SlowImage"
    assert "current_inputs" not in failed.value.details


async def test_cancel_mid_run_interrupts_and_raises_cancelled(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.step_delay = 0.01
    cancel, progress = asyncio.Event(), Progress()
    task = asyncio.create_task(
        connector.run(job({"workflow": workflow(steps=500)}), progress, cancel)
    )
    await wait_until(lambda: progress.saw("/500"))
    cancel.set()
    await connector.interrupt("job-1")  # what the worker does next; must not send twice
    with pytest.raises(JobCancelled):
        await task
    prompt_id = fake.prompts[0]["prompt_id"]
    assert fake.interrupts == [{"prompt_id": prompt_id}]
    assert fake.queue_posts == [{"delete": [prompt_id]}]
    # The connector waited for ComfyUI to confirm, so the GPU is free for the next job.
    status = fake.history[prompt_id]["status"]
    assert status["messages"][-1][0] == "execution_interrupted"


async def test_task_cancellation_still_stops_the_prompt(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.step_delay = 0.01
    progress = Progress()
    task = asyncio.create_task(
        connector.run(job({"workflow": workflow(steps=500)}), progress, asyncio.Event())
    )
    await wait_until(lambda: progress.saw("/500"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.interrupts == [{"prompt_id": fake.prompts[0]["prompt_id"]}]


async def test_cancel_while_queued_deletes_the_prompt(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.pause()
    cancel = asyncio.Event()
    task = asyncio.create_task(connector.run(job({"workflow": workflow()}), Progress(), cancel))
    await wait_until(lambda: fake.prompts)
    cancel.set()
    with pytest.raises(JobCancelled):
        await task
    prompt_id = fake.prompts[0]["prompt_id"]
    assert fake.queue_posts == [{"delete": [prompt_id]}]
    fake.resume()
    assert fake.queue_remaining == 0
    assert prompt_id not in fake.history


async def test_interrupt_by_someone_else_is_a_retryable_failure(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    progress = Progress()
    task = asyncio.create_task(
        connector.run(job({"workflow": workflow(steps=500)}), progress, asyncio.Event())
    )
    await wait_until(lambda: progress.saw("/500"))
    async with httpx.AsyncClient() as client:
        await client.post(f"{fake.url}/interrupt")  # the ComfyUI web UI's global interrupt
    with pytest.raises(JobFailed) as failed:
        await task
    assert failed.value.retryable is True
    assert "interrupted by someone else" in failed.value.message


async def test_socket_drop_mid_run_reconnects_and_completes(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.drop_ws_after_progress = 2
    result, progress = await run(connector, {"workflow": workflow(steps=10)})
    client_id = fake.prompts[0]["client_id"]
    assert fake.ws_connects == [client_id, client_id]
    assert result["images"][0]["base64"]
    assert progress.percents == sorted(progress.percents)


async def test_run_finishing_while_disconnected_is_recovered_from_history(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    fake.drop_ws_after_progress = 2
    fake.refuse_ws_while_running = True  # reconnects fail until the run is over
    result, _ = await run(connector, {"workflow": workflow(steps=10)})
    assert result["outputs"]["3"]["images"][0]["filename"].endswith(".png")
    assert result["images"][0]["base64"]


async def test_concurrent_jobs_use_separate_sockets(
    connector: ComfyUIConnector, fake: FakeComfyUI
) -> None:
    results = await asyncio.gather(
        connector.run(job({"workflow": workflow(color=10)}, "a"), Progress(), asyncio.Event()),
        connector.run(job({"workflow": workflow(color=11)}, "b"), Progress(), asyncio.Event()),
    )
    assert results[0]["prompt_id"] != results[1]["prompt_id"]
    assert len(set(fake.ws_connects)) == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "workflow"),
        ({"workflow": {}}, "workflow"),
        ({"workflow": {"1": {"inputs": {}}}}, "workflow.1"),
        ({"workflow": {"nodes": [], "links": []}}, "UI-format"),
        ({"workflow": WORKFLOW, "extra_data": "x"}, "extra_data"),
    ],
)
async def test_bad_payloads_fail_without_retry(
    connector: ComfyUIConnector, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(JobFailed) as failed:
        await run(connector, payload)
    assert failed.value.retryable is False
    assert field in failed.value.message


async def test_health_reports_version_and_devices(connector: ComfyUIConnector) -> None:
    health = await connector.health()
    assert health.ok
    assert health.info["version"] == "0.8.0"
    assert health.info["devices"][0]["vram_total"] == 25276514304


async def test_unreachable_comfyui_is_unhealthy_and_fails_jobs_retryably() -> None:
    comfy = ComfyUIConnector({"COMFYUI_URL": "http://127.0.0.1:9", "COMFYUI_TIMEOUT_SECONDS": "2"})
    try:
        await comfy.start()  # must not raise
        assert not (await comfy.health()).ok
        with pytest.raises(JobFailed) as failed:
            await run(comfy, {"workflow": WORKFLOW})
        assert failed.value.retryable is True
    finally:
        await comfy.close()
