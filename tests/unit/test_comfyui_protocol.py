"""Replays a real ComfyUI 0.8.0's recorded traffic (tests/fixtures/comfyui) through the
connector's pure protocol code: the run tracker, history outcomes, error descriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.connectors.comfyui_protocol import (
    ComfyRunTracker,
    RunEvent,
    RunFinished,
    RunProgress,
    describe_execution_error,
    describe_prompt_rejection,
    outcome_from_history,
    output_files,
    system_info,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"


def recording(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def frames(rec: dict[str, Any]) -> list[str | bytes]:
    """The WS frames as the client received them: text as sent, binary as a stand-in body
    with the recorded header (the recordings keep only binary frames' first bytes)."""
    out: list[str | bytes] = []
    for step in rec["steps"]:
        ws = step.get("ws")
        if ws is None:
            continue
        if ws["kind"] == "text":
            out.append(json.dumps(ws["message"]))
        else:
            out.append(bytes.fromhex(ws["first_8_bytes_hex"]) + b"\xff\xd8\xff\xe0")
    return out


def workflow_of(rec: dict[str, Any]) -> dict[str, Any]:
    for step in rec["steps"]:
        request = step.get("request", {})
        if request.get("path") == "/prompt" and request.get("method") == "POST":
            prompt: dict[str, Any] = request["json"]["prompt"]
            return prompt
    raise AssertionError("no POST /prompt in recording")


def history_entry(rec: dict[str, Any]) -> dict[str, Any]:
    path = f"/history/{rec['prompt_id']}"
    for step in rec["steps"]:
        if step.get("request", {}).get("path") == path:
            entry: dict[str, Any] = step["response"]["json"][rec["prompt_id"]]
            return entry
    raise AssertionError("no history request in recording")


def replay(name: str) -> tuple[ComfyRunTracker, list[RunEvent], RunFinished | None]:
    rec = recording(name)
    tracker = ComfyRunTracker(rec["prompt_id"], workflow_of(rec))
    events: list[RunEvent] = []
    finished = None
    for frame in frames(rec):
        event = tracker.feed_frame(frame)
        if event is None:
            continue
        events.append(event)
        if isinstance(event, RunFinished):
            finished = event
            break
    return tracker, events, finished


def percents(events: list[RunEvent]) -> list[float]:
    return [e.percent for e in events if isinstance(e, RunProgress)]


@pytest.mark.parametrize(
    "name", ["run_success", "run_success_feature_flags", "run_ws_reconnect", "run_cached"]
)
def test_successful_runs_finish_with_monotonic_progress(name: str) -> None:
    tracker, events, finished = replay(name)
    assert finished == RunFinished("success", finished.data if finished else {})
    assert events[-1] is finished
    values = percents(events)
    assert values == sorted(values)
    assert all(0 <= v <= 99 for v in values)
    assert tracker.percent == 100.0
    assert tracker.success_seen
    assert tracker.outputs["3"]["images"][0]["filename"].endswith("_00001_.png")


def test_success_reports_each_sampling_step() -> None:
    _, events, _ = replay("run_success")
    messages = [e.message for e in events if isinstance(e, RunProgress)]
    for step in range(1, 6):
        assert f"node 2 (SlowImage): {step}/5" in messages
    # Node 2's progress bar is a third of this three-node workflow.
    assert 33 < max(percents(events)[: messages.index("node 2 (SlowImage): 1/5") + 1]) < 67


def test_binary_preview_frames_are_ignored() -> None:
    tracker = ComfyRunTracker("p", {"1": {"class_type": "X"}})
    assert tracker.feed_frame(b"\x00\x00\x00\x01\x00\x00\x00\x01\xff\xd8") is None
    assert tracker.feed_frame(b"\x00\x00\x00\x04\x00\x00\x00\x02{}") is None
    assert tracker.feed_frame("not json") is None
    assert tracker.feed_frame('{"type": "something_new", "data": {}}') is None


def test_cached_run_has_no_executing_per_node_yet_finishes() -> None:
    rec = recording("run_cached")
    executing = [
        f for f in frames(rec) if isinstance(f, str) and json.loads(f)["type"] == "executing"
    ]
    assert [json.loads(f)["data"]["node"] for f in executing] == [None]
    _, events, finished = replay("run_cached")
    assert finished is not None
    assert finished.status == "success"
    assert any(isinstance(e, RunProgress) and "3 of 3 nodes cached" in e.message for e in events)


def test_execution_error_ends_the_run_with_its_details() -> None:
    _, events, finished = replay("run_execution_error")
    assert finished is not None
    assert finished.status == "error"
    assert finished.data["node_id"] == "2"
    assert finished.data["exception_type"] == "ValueError"
    message = describe_execution_error(finished.data)
    assert message == (
        "ComfyUI node 2 (SlowImage) failed: ValueError: "
        "SlowImage: deliberate failure at step 3 of 5"
    )
    assert percents(events) == sorted(percents(events))


def test_interrupt_ends_the_run_as_interrupted() -> None:
    _, _, finished = replay("run_interrupted")
    assert finished is not None
    assert finished.status == "interrupted"
    assert finished.data["node_type"] == "SlowImage"


def test_reconnect_executing_without_prompt_id_is_accepted() -> None:
    rec = recording("run_ws_reconnect")
    tracker = ComfyRunTracker(rec["prompt_id"], workflow_of(rec))
    tracker.feed({"type": "execution_start", "data": {"prompt_id": rec["prompt_id"]}})
    event = tracker.feed({"type": "executing", "data": {"node": "2"}})
    assert isinstance(event, RunProgress)
    assert event.message == "running node 2 (SlowImage)"


def test_messages_of_other_prompts_are_ignored() -> None:
    """run_no_client_id: an unrelated socket receives another prompt's progress broadcasts."""
    rec = recording("run_no_client_id")
    tracker = ComfyRunTracker("our-prompt", workflow_of(rec))
    assert [tracker.feed_frame(f) for f in frames(rec)] == [None] * len(frames(rec))
    assert tracker.percent == 0.0


def test_null_executing_before_our_run_started_is_not_the_end() -> None:
    tracker = ComfyRunTracker("p", {"1": {"class_type": "X"}})
    assert tracker.feed({"type": "executing", "data": {"node": None}}) is None
    assert tracker.finished is None


def test_queue_busy_tracker_follows_its_own_prompt() -> None:
    rec = recording("queue_busy")
    prompt_a = "2ad8fb03-0b77-4183-8127-1678a54392c0"
    tracker = ComfyRunTracker(prompt_a, workflow_of(rec))
    finished = [e for f in frames(rec) if isinstance(e := tracker.feed_frame(f), RunFinished)]
    assert [e.status for e in finished] == ["success"]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("run_success", "success"),
        ("run_cached", "success"),
        ("run_execution_error", "error"),
        ("run_interrupted", "interrupted"),
    ],
)
def test_outcome_from_recorded_history(name: str, status: str) -> None:
    outcome = outcome_from_history(history_entry(recording(name)))
    assert outcome is not None
    assert outcome.status == status
    if status == "error":
        assert outcome.data["exception_type"] == "ValueError"


def test_outcome_from_history_of_an_unfinished_entry() -> None:
    assert outcome_from_history({"status": {"status_str": None, "messages": []}}) is None


def _rejections() -> list[tuple[str, Any]]:
    cases = []
    for name in ("prompt_error_missing_input", "prompt_error_unknown_node", "prompt_error_other"):
        for step in recording(name)["steps"]:
            response = step["response"]
            if response["status"] == 400:
                cases.append((step.get("note", name), response["json"]))
    return cases


@pytest.mark.parametrize(("note", "body"), _rejections(), ids=[c[0] for c in _rejections()])
def test_every_recorded_rejection_reads_well(note: str, body: dict[str, Any]) -> None:
    message, node_errors = describe_prompt_rejection(body)
    assert message.startswith("ComfyUI rejected the workflow: ")
    assert message.count(body["error"]["message"]) == 1
    assert node_errors == body["node_errors"]
    for node_id, info in body["node_errors"].items():
        assert f"node {node_id} ({info['class_type']})" in message
        for error in info["errors"]:
            assert error["message"] in message


def test_rejection_messages_name_the_problem() -> None:
    bodies = {note: body for note, body in _rejections()}
    unknown = describe_prompt_rejection(bodies["prompt_error_unknown_node"])[0]
    assert "Cannot execute because node NoSuchNode does not exist. (Node ID '#2')" in unknown
    missing = describe_prompt_rejection(bodies["prompt_error_missing_input"])[0]
    assert "node 2 (SlowImage): Required input is missing: image" in missing


def test_rejection_in_the_old_string_shape() -> None:
    message, node_errors = describe_prompt_rejection({"error": "no prompt", "node_errors": []})
    assert message == "ComfyUI rejected the workflow: no prompt"
    assert node_errors == {}
    assert describe_prompt_rejection(None)[0] == "ComfyUI rejected the workflow"


def test_output_files_from_recorded_history_and_other_keys() -> None:
    outputs = history_entry(recording("run_success"))["outputs"]
    files = list(output_files(outputs))
    assert [(f.node, f.filename, f.type) for f in files] == [
        ("3", "fixture_success_8bcd41_00001_.png", "output")
    ]
    mixed = {
        "9": {"gifs": [{"filename": "a.mp4", "subfolder": "v", "type": "output"}]},
        "10": {"text": ["hello"], "animated": [False]},
        "11": {"images": [{"filename": "p.png", "type": "temp"}]},
    }
    names = [(f.node, f.filename, f.subfolder, f.type) for f in output_files(mixed)]
    assert names == [("9", "a.mp4", "v", "output"), ("11", "p.png", "", "temp")]


def test_system_info_from_recorded_stats() -> None:
    stats = recording("system_stats")["steps"][0]["response"]["json"]
    info = system_info(stats)
    assert info["version"] == "0.8.0"
    assert info["devices"] == [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 25276514304,
            "vram_free": 24044277760,
        }
    ]
