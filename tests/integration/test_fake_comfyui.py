"""The fake ComfyUI against the recordings of the real one: same answers, same message order.

The connector tests are only as good as this fake, so its protocol is checked here directly,
with a plain HTTP client and WebSocket, against tests/fixtures/comfyui.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.helpers import wait_until


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with FakeComfyUI(step_delay=0.001) as server:
        yield server


@pytest.fixture
async def http(fake: FakeComfyUI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=10) as client:
        yield client


def recorded_prompt_requests(name: str) -> list[dict[str, Any]]:
    return [
        s for s in load_recording(name)["steps"] if s.get("request", {}).get("path") == "/prompt"
    ]


def shape(frame: str | bytes | dict[str, Any]) -> tuple[Any, ...]:
    """What must match between fake and recording: message type, data keys, progress_state
    node states; for binary frames the event type."""
    if isinstance(frame, bytes):
        return ("binary", struct.unpack(">I", frame[:4])[0])
    message = json.loads(frame) if isinstance(frame, str) else frame
    data = message["data"]
    if message["type"] == "progress_state":
        nodes = tuple((k, v["state"]) for k, v in data["nodes"].items())
        return ("progress_state", nodes)
    return (message["type"], tuple(sorted(data)))


def recorded_shapes(name: str) -> list[tuple[Any, ...]]:
    shapes: list[tuple[Any, ...]] = []
    for step in load_recording(name)["steps"]:
        ws = step.get("ws")
        if ws is not None:
            shapes.append(
                shape(ws["message"]) if ws["kind"] == "text" else ("binary", ws["event_type"])
            )
    return shapes


async def run_prompt(
    fake: FakeComfyUI, http: httpx.AsyncClient, workflow: dict[str, Any], **extra: Any
) -> tuple[str, list[str | bytes]]:
    client_id = uuid.uuid4().hex
    frames: list[str | bytes] = []
    async with connect(f"{fake.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
        frames.append(await ws.recv())  # the initial status
        body = {"prompt": workflow, "client_id": client_id, **extra}
        answer = (await http.post("/prompt", json=body)).json()
        frames += await collect_until_done(ws, answer["prompt_id"])
    return answer["prompt_id"], frames


async def collect_until_done(ws: ClientConnection, prompt_id: str) -> list[str | bytes]:
    frames: list[str | bytes] = []
    while True:
        frame = await ws.recv()
        frames.append(frame)
        if isinstance(frame, str):
            message = json.loads(frame)
            if message["type"] == "executing" and message["data"] == {
                "node": None,
                "prompt_id": prompt_id,
            }:
                return frames


def recorded_workflow(name: str) -> dict[str, Any]:
    prompt: dict[str, Any] = recorded_prompt_requests(name)[0]["request"]["json"]["prompt"]
    return prompt


@pytest.mark.parametrize(
    "name", ["prompt_error_missing_input", "prompt_error_unknown_node", "prompt_error_other"]
)
async def test_rejections_match_the_recordings(http: httpx.AsyncClient, name: str) -> None:
    for step in recorded_prompt_requests(name):
        request, expected = step["request"], step["response"]
        if "raw_body" in request:
            response = await http.post("/prompt", content=request["raw_body"])
            assert response.status_code == 500
            assert response.headers["content-type"] == expected["content_type"]
            assert response.text == expected["text"]
            continue
        response = await http.post("/prompt", json=request["json"])
        assert response.status_code == expected["status"], step.get("note")
        body = response.json()
        for errors in [*body["node_errors"].values(), *expected["json"]["node_errors"].values()]:
            for error in errors["errors"]:
                error["extra_info"].pop("traceback", None)  # file paths and line numbers
        assert body == expected["json"], step.get("note")


@pytest.mark.parametrize(
    "name", ["run_success", "run_execution_error", "run_success_feature_flags"]
)
async def test_run_message_sequence_matches_the_recording(
    fake: FakeComfyUI, http: httpx.AsyncClient, name: str
) -> None:
    client_id = uuid.uuid4().hex
    rec_request = recorded_prompt_requests(name)[0]["request"]["json"]
    negotiate = name.endswith("feature_flags")
    frames: list[str | bytes] = []
    async with connect(f"{fake.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
        if negotiate:
            flags = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            await ws.send(json.dumps(flags))
        frames.append(await ws.recv())
        if negotiate:
            frames.append(await ws.recv())
        body = {**rec_request, "client_id": client_id}
        answer = (await http.post("/prompt", json=body)).json()
        if "prompt_id" in rec_request:
            assert answer["prompt_id"] == rec_request["prompt_id"]  # client-chosen id honoured
        frames += await collect_until_done(ws, answer["prompt_id"])
    assert [shape(f) for f in frames] == recorded_shapes(name)


async def test_resubmitted_prompt_is_served_from_cache(
    fake: FakeComfyUI, http: httpx.AsyncClient
) -> None:
    workflow = recorded_workflow("run_cached")
    await run_prompt(fake, http, workflow)
    prompt_id, frames = await run_prompt(fake, http, workflow)
    assert [shape(f) for f in frames] == recorded_shapes("run_cached")
    history = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    assert history["status"]["messages"][1][1]["nodes"] == ["1", "2", "3"]


async def test_interrupt_sequence_and_history(fake: FakeComfyUI, http: httpx.AsyncClient) -> None:
    client_id = uuid.uuid4().hex
    workflow = recorded_workflow("run_interrupted")
    async with connect(f"{fake.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
        await ws.recv()
        answer = await http.post("/prompt", json={"prompt": workflow, "client_id": client_id})
        prompt_id = answer.json()["prompt_id"]
        frames: list[str | bytes] = []
        while not frames or shape(frames[-1])[0] != "progress":
            frames.append(await ws.recv())
        response = await http.post("/interrupt", json={"prompt_id": prompt_id})
        assert (response.status_code, response.content) == (200, b"")
        assert "content-type" not in response.headers
        frames += await collect_until_done(ws, prompt_id)
    ends = [shape(f)[0] for f in frames[-3:]]
    assert ends == ["execution_interrupted", "status", "executing"]
    entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    recorded = load_recording("run_interrupted")["steps"][-3]["response"]["json"]
    expected = next(iter(recorded.values()))
    assert entry["status"]["status_str"] == expected["status"]["status_str"] == "error"
    assert entry["status"]["completed"] is False
    assert entry["outputs"] == {}
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in expected["status"]["messages"]
    ]


async def test_reconnect_gets_status_then_current_node(
    fake: FakeComfyUI, http: httpx.AsyncClient
) -> None:
    client_id = uuid.uuid4().hex
    url = f"{fake.url.replace('http', 'ws')}/ws?clientId={client_id}"
    fake.step_delay = 0.02
    async with connect(url) as ws:
        await ws.recv()
        body = {"prompt": recorded_workflow("run_ws_reconnect"), "client_id": client_id}
        prompt_id = (await http.post("/prompt", json=body)).json()["prompt_id"]
        await wait_until(lambda: fake.current_node == "2")
    # Closed while node 2 runs: what it sends meanwhile is lost. Reconnect, same clientId:
    async with connect(url) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "status"
        assert first["data"]["sid"] == client_id
        second = json.loads(await ws.recv())
        assert second == {"type": "executing", "data": {"node": "2"}}  # no prompt_id
        frames = await collect_until_done(ws, prompt_id)
    assert shape(frames[-1]) == ("executing", ("node", "prompt_id"))
    assert fake.ws_connects == [client_id, client_id]


async def test_prompt_without_client_id_only_broadcasts_progress(
    fake: FakeComfyUI, http: httpx.AsyncClient
) -> None:
    workflow = recorded_workflow("run_no_client_id")
    async with connect(f"{fake.url.replace('http', 'ws')}/ws?clientId={uuid.uuid4().hex}") as ws:
        await ws.recv()
        prompt_id = (await http.post("/prompt", json={"prompt": workflow})).json()["prompt_id"]
        kinds: set[str] = set()
        while prompt_id not in fake.history or not kinds:
            kinds.add(json.loads(await ws.recv())["type"])
    assert kinds <= {"status", "progress_state", "progress"}
    recorded = {
        s["ws"]["message"]["type"] for s in load_recording("run_no_client_id")["steps"] if "ws" in s
    }
    assert kinds <= recorded


async def test_http_routes_match_recorded_shapes(
    fake: FakeComfyUI, http: httpx.AsyncClient
) -> None:
    stats = load_recording("system_stats")["steps"][0]["response"]["json"]
    assert (await http.get("/system_stats")).json() == stats
    assert (await http.get("/api/system_stats")).json() == stats
    for step in load_recording("object_info_subset")["steps"]:
        response = await http.get(step["request"]["path"])
        assert response.json() == step["response"]["json"]
    assert (await http.get("/history/nope")).json() == {}
    idle = load_recording("queue_idle")["steps"]
    assert (await http.get("/queue")).json() == idle[0]["response"]["json"]
    assert (await http.get("/prompt")).json() == idle[1]["response"]["json"]


async def test_queue_delete_and_view(fake: FakeComfyUI, http: httpx.AsyncClient) -> None:
    fake.pause()
    workflow = recorded_workflow("run_success")
    first = (await http.post("/prompt", json={"prompt": workflow})).json()["prompt_id"]
    queue = (await http.get("/queue")).json()
    assert [entry[1] for entry in queue["queue_pending"]] == [first]
    response = await http.post("/queue", json={"delete": [first]})
    assert (response.status_code, response.content) == (200, b"")
    assert (await http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
    fake.resume()
    prompt_id, _ = await run_prompt(fake, http, workflow)
    entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    image = entry["outputs"]["3"]["images"][0]
    view = await http.get("/view", params=image)
    assert view.status_code == 200
    assert view.headers["content-type"] == "image/png"
    assert view.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (await http.get("/view", params={**image, "filename": "x.png"})).status_code == 404
    assert (await http.get("/view", params={**image, "filename": "../x"})).status_code == 400
    assert first not in fake.history
