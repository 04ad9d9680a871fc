"""ComfyUI's wire protocol, without I/O: following a run, reading errors, finding output files.

Everything here was written against a real ComfyUI 0.8.0's traffic (tests/fixtures/comfyui),
and is kept free of sockets so those recordings can be replayed through it in unit tests.

Facts from the recordings that shape this module:
- The socket is ours alone (one clientId per job), but `status` is broadcast, and prompts
  posted without a client_id broadcast `progress`/`progress_state` to every socket, so every
  message naming another prompt_id is ignored.
- A fully cached prompt sends no `executing` for any node: `execution_cached` lists them all.
- After a reconnect the server re-sends the current node as `executing` with no prompt_id.
- The end is `executing` with `node: null`; it follows `execution_success`, and history is
  written by then. Errors and interrupts end the run as soon as they arrive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from worker.connectors.util import shorten


@dataclass(frozen=True, slots=True)
class RunProgress:
    percent: float
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    status: Literal["success", "error", "interrupted"]
    # The terminal message's data: the execution_error / execution_interrupted payload.
    data: Mapping[str, Any]


RunEvent = RunProgress | RunFinished


class ComfyRunTracker:
    """Follows one prompt's WebSocket messages and turns them into progress and an outcome.

    Progress is the share of workflow nodes done, counting a running node by its own progress
    bar, capped at 99 until the run ends, and never decreasing (cached nodes and reconnects
    can make the raw figure jump either way)."""

    def __init__(self, prompt_id: str, workflow: Mapping[str, Any]) -> None:
        self.prompt_id = prompt_id
        self._class_types = {
            str(node_id): str(node.get("class_type", "?")) if isinstance(node, Mapping) else "?"
            for node_id, node in workflow.items()
        }
        self._done_share: dict[str, float] = {}
        self._current: str | None = None
        self.started = False
        self.success_seen = False
        self.finished: RunFinished | None = None
        self.outputs: dict[str, Any] = {}
        self.percent = 0.0
        self.message = "queued in ComfyUI"
        # The connector reports this state itself when the prompt is accepted.
        self._reported: tuple[float, str] | None = (self.percent, self.message)

    def feed_frame(self, frame: str | bytes) -> RunEvent | None:
        """Binary frames are previews (not job progress) and unparsable text is not ours."""
        if isinstance(frame, bytes):
            return None
        try:
            message = json.loads(frame)
        except ValueError:
            return None
        return self.feed(message) if isinstance(message, Mapping) else None

    def feed(self, message: Mapping[str, Any]) -> RunEvent | None:
        if self.finished is not None:
            return None
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(kind, str) or not isinstance(data, Mapping):
            return None
        owner = data.get("prompt_id")
        if owner is not None and owner != self.prompt_id:
            return None
        handler = _HANDLERS.get(kind)
        if handler is None:
            return None
        event = handler(self, data)
        if event is not None:
            return event
        if kind == "progress_state":
            # Always followed by `progress`, `executing` or the end: report once, from those.
            return None
        return self._progress_event()

    # --- handlers: update state; return an event only when the run is over -------------------

    def _on_execution_start(self, data: Mapping[str, Any]) -> RunEvent | None:
        self.started = True
        self.message = "started"
        return None

    def _on_execution_cached(self, data: Mapping[str, Any]) -> RunEvent | None:
        self.started = True
        nodes = [str(n) for n in data.get("nodes") or () if str(n) in self._class_types]
        for node in nodes:
            self._set_share(node, 1.0)
        if nodes:
            self.message = f"{len(nodes)} of {len(self._class_types)} nodes cached"
        return None

    def _on_executing(self, data: Mapping[str, Any]) -> RunEvent | None:
        node = data.get("node")
        if node is None:
            # A null node without prompt_id could belong to anything before our run started.
            if data.get("prompt_id") == self.prompt_id or self.started:
                return self._finish(RunFinished("success", data))
            return None
        node = self._known(node, data.get("display_node"))
        self.started = True
        if self._current is not None and self._current != node:
            self._set_share(self._current, 1.0)
        self._current = node
        if node is not None:
            self.message = f"running node {node} ({self._class_types[node]})"
        return None

    def _on_progress(self, data: Mapping[str, Any]) -> RunEvent | None:
        node = self._known(data.get("node"))
        value, maximum = data.get("value"), data.get("max")
        share = _ratio(value, maximum)
        if node is None or share is None:
            return None
        self._set_share(node, share)
        self.message = f"node {node} ({self._class_types[node]}): {value:g}/{maximum:g}"
        return None

    def _on_progress_state(self, data: Mapping[str, Any]) -> RunEvent | None:
        nodes = data.get("nodes")
        if not isinstance(nodes, Mapping):
            return None
        for key, entry in nodes.items():
            if not isinstance(entry, Mapping):
                continue
            node = self._known(entry.get("real_node_id"), entry.get("display_node_id"), key)
            if node is None:
                continue
            if entry.get("state") == "finished":
                self._set_share(node, 1.0)
                continue
            share = _ratio(entry.get("value"), entry.get("max"))
            if share is not None:
                self._set_share(node, share)
        return None

    def _on_executed(self, data: Mapping[str, Any]) -> RunEvent | None:
        node = data.get("node")
        if node is not None:
            self.outputs[str(node)] = data.get("output")
            known = self._known(node, data.get("display_node"))
            if known is not None:
                self._set_share(known, 1.0)
        return None

    def _on_execution_success(self, data: Mapping[str, Any]) -> RunEvent | None:
        # Not the end marker: `executing` null follows, and history may not be written yet.
        self.success_seen = True
        self.message = "finishing"
        return None

    def _on_execution_error(self, data: Mapping[str, Any]) -> RunEvent | None:
        return self._finish(RunFinished("error", data))

    def _on_execution_interrupted(self, data: Mapping[str, Any]) -> RunEvent | None:
        return self._finish(RunFinished("interrupted", data))

    # --- helpers ---------------------------------------------------------------------------

    def _finish(self, finished: RunFinished) -> RunFinished:
        self.finished = finished
        if finished.status == "success":
            self.percent = 100.0
        return finished

    def _known(self, *candidates: Any) -> str | None:
        """The workflow node a message is about: expanded or nested nodes get internal ids,
        but carry the id of the workflow node they belong to as display/real node id."""
        for candidate in candidates:
            if candidate is not None and str(candidate) in self._class_types:
                return str(candidate)
        return None

    def _set_share(self, node: str, share: float) -> None:
        share = min(1.0, max(0.0, float(share)))
        if share > self._done_share.get(node, 0.0):
            self._done_share[node] = share

    def _progress_event(self) -> RunProgress | None:
        total = len(self._class_types) or 1
        raw = 100.0 * sum(self._done_share.values()) / total
        self.percent = max(self.percent, min(99.0, round(raw, 2)))
        current = (self.percent, self.message)
        if current == self._reported:
            return None
        self._reported = current
        return RunProgress(*current)


def _ratio(value: Any, maximum: Any) -> float | None:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, maximum))
    if not numbers or maximum <= 0:
        return None
    return float(value) / float(maximum)


_HANDLERS = {
    "execution_start": ComfyRunTracker._on_execution_start,
    "execution_cached": ComfyRunTracker._on_execution_cached,
    "executing": ComfyRunTracker._on_executing,
    "progress": ComfyRunTracker._on_progress,
    "progress_state": ComfyRunTracker._on_progress_state,
    "executed": ComfyRunTracker._on_executed,
    "execution_success": ComfyRunTracker._on_execution_success,
    "execution_error": ComfyRunTracker._on_execution_error,
    "execution_interrupted": ComfyRunTracker._on_execution_interrupted,
}


def outcome_from_history(entry: Mapping[str, Any]) -> RunFinished | None:
    """The outcome recorded in a `/history/{id}` entry, or None while it is not final."""
    status = entry.get("status")
    if not isinstance(status, Mapping):
        # Builds before the status block existed wrote history only on success.
        return RunFinished("success", {}) if "outputs" in entry else None
    messages = status.get("messages") or []
    for item in reversed(messages):
        if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[1], Mapping):
            if item[0] == "execution_error":
                return RunFinished("error", item[1])
            if item[0] == "execution_interrupted":
                return RunFinished("interrupted", item[1])
    if status.get("status_str") == "success" or status.get("completed") is True:
        return RunFinished("success", {})
    if status.get("status_str") == "error":
        return RunFinished("error", {"exception_message": "ComfyUI reported an error"})
    return None


def describe_execution_error(data: Mapping[str, Any]) -> str:
    node_id = data.get("node_id", "?")
    node_type = data.get("node_type", "?")
    exc_type = data.get("exception_type", "Exception")
    exc_message = str(data.get("exception_message") or "").strip()
    return f"ComfyUI node {node_id} ({node_type}) failed: {exc_type}: {shorten(exc_message)}"


def describe_prompt_rejection(body: Any) -> tuple[str, dict[str, Any]]:
    """A readable message and the node errors of a `POST /prompt` 400.

    Shapes seen: `{"error": {type, message, details, extra_info}, "node_errors": {id: {errors:
    [...], class_type}}}` (node_errors may be `{}`, e.g. for `invalid_prompt`), and from older
    builds `{"error": "no prompt", "node_errors": []}`."""
    if not isinstance(body, Mapping):
        return "ComfyUI rejected the workflow", {}
    error = body.get("error")
    node_errors = body.get("node_errors")
    node_errors = dict(node_errors) if isinstance(node_errors, Mapping) else {}
    if isinstance(error, Mapping):
        headline = str(error.get("message") or error.get("type") or "rejected")
        details = str(error.get("details") or "").strip()
        if details and details != headline:
            headline = f"{headline} ({details})"
    elif isinstance(error, str) and error:
        headline = error
    else:
        headline = "rejected"
    parts = [f"ComfyUI rejected the workflow: {headline}"]
    for node_id, info in node_errors.items():
        parts.append(_describe_node_error(str(node_id), info))
    return "; ".join(parts), node_errors


def _describe_node_error(node_id: str, info: Any) -> str:
    if not isinstance(info, Mapping):
        return f"node {node_id}: {info}"
    class_type = info.get("class_type", "?")
    texts = []
    for err in info.get("errors") or []:
        if not isinstance(err, Mapping):
            continue
        text = str(err.get("message") or err.get("type") or "error")
        details = str(err.get("details") or "").strip()
        texts.append(f"{text}: {details}" if details else text)
    return f"node {node_id} ({class_type}): {', '.join(texts) or 'invalid'}"


@dataclass(frozen=True, slots=True)
class OutputFile:
    node: str
    filename: str
    subfolder: str
    type: str


def output_files(outputs: Mapping[str, Any]) -> Iterator[OutputFile]:
    """Every file a run produced. Nodes use many keys (`images`, `gifs`, `audio`, ...) and put
    other things in lists too (`text`, `animated`), so any list item with a filename counts."""
    for node, output in outputs.items():
        if not isinstance(output, Mapping):
            continue
        for items in output.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                    yield OutputFile(
                        node=str(node),
                        filename=item["filename"],
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )


def system_info(stats: Any) -> dict[str, Any]:
    """The dashboard-worthy part of `/system_stats`: version and per-device memory."""
    if not isinstance(stats, Mapping):
        return {}
    system = stats.get("system")
    if not isinstance(system, Mapping):
        system = {}
    devices = []
    for device in stats.get("devices") or []:
        if isinstance(device, Mapping):
            devices.append(
                {
                    key: device.get(key)
                    for key in ("name", "type", "index", "vram_total", "vram_free")
                }
            )
    return {"version": system.get("comfyui_version"), "devices": devices}
