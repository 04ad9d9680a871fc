"""The fake ComfyUI's queue and executor: emits each run's events in the recorded order.

Per node: progress_state (running) -> executing -> [per step: progress_state, progress,
preview] -> [executed] -> progress_state (finished). Around the run: execution_start,
execution_cached, ..., execution_success, history written, status, executing null. Errors and
interrupts end with execution_error / execution_interrupted, status, executing null.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.server import png_bytes

if TYPE_CHECKING:
    from tests.fakes.comfyui import FakeComfyUI


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Prompt:
    number: int
    prompt_id: str
    graph: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    interrupted: bool = False
    current_node: str | None = None
    messages: list[list[Any]] = field(default_factory=list)

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return str(value) if value else None

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs]


class _Stop(Exception):
    """The run ended early (error or interrupt); its messages were already sent."""


class ComfyExecutor:
    def __init__(self, fake: FakeComfyUI) -> None:
        self.fake = fake
        self.pending: list[Prompt] = []
        self.running: Prompt | None = None
        self._wake: asyncio.Event | None = None
        self.gate = asyncio.Event()  # cleared: the queue is held, prompts stay pending
        self.gate.set()
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[str, Any] = {}  # node signature -> its UI output (or None)
        self._counters: dict[str, int] = {}

    @property
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def enqueue(self, prompt: Prompt) -> None:
        self.pending.append(prompt)
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop())
        assert self._wake is not None
        self._wake.set()

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                await self.gate.wait()
                if not self.pending:
                    break
                prompt = self.pending.pop(0)
                self.running = prompt
                self.fake.broadcast_status()
                try:
                    await self._execute(prompt)
                except _Stop:
                    pass
                finally:
                    self.running = None

    # --- one run -------------------------------------------------------------------------

    def _emit(self, prompt: Prompt, kind: str, data: dict[str, Any]) -> None:
        if kind in ("execution_start", "execution_cached", "execution_success"):
            prompt.messages.append([kind, data])
        if kind == "execution_interrupted":
            self.fake.broadcast(kind, data)  # upstream broadcasts this one to every socket
        elif prompt.client_id:
            self.fake.send(prompt.client_id, kind, data)
        elif kind in ("progress", "progress_state"):
            self.fake.broadcast(kind, data)  # no client_id: only these reach anyone

    async def _execute(self, prompt: Prompt) -> None:
        pid = prompt.prompt_id
        order = self._order(prompt)
        signatures = {node: self._signature(prompt.graph, node) for node in order}
        cached = [n for n in order if self.fake.cache and signatures[n] in self._cache]
        self._emit(prompt, "execution_start", {"prompt_id": pid, "timestamp": _now_ms()})
        self._emit(
            prompt,
            "execution_cached",
            {"nodes": cached, "prompt_id": pid, "timestamp": _now_ms()},
        )
        states: dict[str, dict[str, Any]] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        for node in order:
            class_type = prompt.graph[node]["class_type"]
            if node in cached:
                ui = self._cache[signatures[node]]
                if ui is not None:
                    self._emit(prompt, "executed", self._executed(prompt, node, ui))
                    outputs[node] = ui
                    self._state(prompt, states, node, 1.0, 1.0, "finished")
                continue
            if prompt.interrupted:
                self._interrupted(prompt, node, class_type, executed)
            self._state(prompt, states, node, 0.0, 1.0, "running")
            prompt.current_node = node
            self._emit(prompt, "executing", {"node": node, "display_node": node, "prompt_id": pid})
            ui = None
            if class_type == "SlowImage":
                steps = await self._slow_image(prompt, node, states, executed)
                self._state(prompt, states, node, steps, steps, "finished", emit=False)
            elif class_type == "SaveImage":
                ui = self._save_image(prompt, node)
                self._emit(prompt, "executed", self._executed(prompt, node, ui))
                outputs[node] = ui
            self._state(prompt, states, node, 1.0, 1.0, "finished", keep_numbers=True)
            executed.append(node)
            self._cache[signatures[node]] = ui
        self._emit(prompt, "execution_success", {"prompt_id": pid, "timestamp": _now_ms()})
        self._write_history(prompt, outputs, "success")
        self._finish(prompt)

    async def _slow_image(
        self, prompt: Prompt, node: str, states: dict[str, Any], executed: list[str]
    ) -> int:
        inputs = prompt.graph[node]["inputs"]
        fake = self.fake
        steps = int(fake.steps if fake.steps is not None else inputs.get("steps", 5))
        delay = float(fake.step_delay if fake.step_delay is not None else inputs.get("delay", 0.2))
        fail_at = fake.fail_at_step if fake.fail_at_step is not None else inputs.get("fail_at_step")
        preview = fake.preview if fake.preview is not None else bool(inputs.get("preview"))
        sid, pid = prompt.client_id, prompt.prompt_id
        for index in range(steps):
            if prompt.interrupted:
                self._interrupted(prompt, node, "SlowImage", executed)
            if fail_at and index + 1 == fail_at:
                self._error(prompt, node, inputs, executed, steps, index + 1)
            await asyncio.sleep(delay)
            self._state(prompt, states, node, index + 1, steps, "running")
            if preview:
                fake.send_preview(sid, pid, node, before_text=True)
            progress = {"value": index + 1, "max": steps, "prompt_id": pid, "node": node}
            self._emit(prompt, "progress", progress)
            if preview:
                fake.send_preview(sid, pid, node, before_text=False)
            if fake.drop_ws_after_progress == index + 1:
                fake.drop_socket(sid)
        return steps

    def _save_image(self, prompt: Prompt, node: str) -> dict[str, Any]:
        prefix = str(prompt.graph[node]["inputs"].get("filename_prefix") or "ComfyUI")
        count = self._counters[prefix] = self._counters.get(prefix, 0) + 1
        filename = f"{prefix}_{count:05d}_.png"
        color = self._color(prompt)
        self.fake.files[("output", "", filename)] = png_bytes(8, 8, color)
        return {"images": [{"filename": filename, "subfolder": "", "type": "output"}]}

    def _color(self, prompt: Prompt) -> tuple[int, int, int]:
        for node in prompt.graph.values():
            if node.get("class_type") == "EmptyImage":
                value = int(node["inputs"].get("color") or 0)
                return (value >> 16) & 255, (value >> 8) & 255, value & 255
        return (0, 0, 0)

    def _state(
        self,
        prompt: Prompt,
        states: dict[str, dict[str, Any]],
        node: str,
        value: float,
        maximum: float,
        state: str,
        *,
        emit: bool = True,
        keep_numbers: bool = False,
    ) -> None:
        """Update the cumulative progress_state map and send it (the map, not a delta)."""
        previous = states.get(node)
        if keep_numbers and previous is not None and previous["max"] != 1.0:
            value, maximum = previous["value"], previous["max"]
        states[node] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node,
            "prompt_id": prompt.prompt_id,
            "display_node_id": node,
            "parent_node_id": None,
            "real_node_id": node,
        }
        if emit:
            data = {"prompt_id": prompt.prompt_id, "nodes": json.loads(json.dumps(states))}
            self._emit(prompt, "progress_state", data)

    def _executed(self, prompt: Prompt, node: str, ui: Any) -> dict[str, Any]:
        return {"node": node, "display_node": node, "output": ui, "prompt_id": prompt.prompt_id}

    def _interrupted(self, prompt: Prompt, node: str, class_type: str, executed: list[str]) -> None:
        data = {
            "prompt_id": prompt.prompt_id,
            "node_id": node,
            "node_type": class_type,
            "executed": list(executed),
            "timestamp": _now_ms(),
        }
        self._emit(prompt, "execution_interrupted", data)
        prompt.messages.append(["execution_interrupted", data])
        self._write_history(prompt, {}, "error")
        self._finish(prompt)
        raise _Stop

    def _error(
        self,
        prompt: Prompt,
        node: str,
        inputs: dict[str, Any],
        executed: list[str],
        steps: int,
        step: int,
    ) -> None:
        data = {
            "prompt_id": prompt.prompt_id,
            "node_id": node,
            "node_type": "SlowImage",
            "executed": list(executed),
            "exception_message": f"SlowImage: deliberate failure at step {step} of {steps}\n",
            "exception_type": "ValueError",
            "traceback": [
                '  File "/opt/ComfyUI/custom_nodes/slow_node.py", line 45, in run\n'
                '    raise ValueError(f"SlowImage: deliberate failure at step {i + 1} of '
                '{steps}")\n'
            ],
            "current_inputs": {k: [repr(v)] for k, v in inputs.items()},
            "current_outputs": [node, *executed],
            "timestamp": _now_ms(),
        }
        self._emit(prompt, "execution_error", data)
        prompt.messages.append(["execution_error", data])
        self._write_history(prompt, {}, "error")
        self._finish(prompt)
        raise _Stop

    def _write_history(self, prompt: Prompt, outputs: dict[str, Any], status: str) -> None:
        self.fake.history[prompt.prompt_id] = {
            "prompt": prompt.as_list(),
            "outputs": outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": prompt.messages,
            },
            "meta": {
                node: {
                    "node_id": node,
                    "display_node": node,
                    "parent_node": None,
                    "real_node_id": node,
                }
                for node in outputs
            },
        }

    def _finish(self, prompt: Prompt) -> None:
        self.running = None  # queue_remaining in the status below no longer counts it
        prompt.current_node = None
        self.fake.broadcast_status()
        self._emit(prompt, "executing", {"node": None, "prompt_id": prompt.prompt_id})

    # --- graph helpers -------------------------------------------------------------------

    def _order(self, prompt: Prompt) -> list[str]:
        """Dependencies first, only nodes the outputs need (ComfyUI skips the rest)."""
        order: list[str] = []

        def visit(node: str) -> None:
            if node in order:
                return
            for value in prompt.graph[node].get("inputs", {}).values():
                if isinstance(value, list):
                    visit(str(value[0]))
            order.append(node)

        for output in prompt.outputs:
            visit(output)
        return order

    def _signature(self, graph: dict[str, Any], node: str) -> str:
        """Equal for nodes whose class and inputs (followed through links) are equal: what
        ComfyUI's cache keys on, so resubmitting a prompt hits the cache."""
        entry = graph[node]
        inputs = {
            name: self._signature(graph, str(value[0])) if isinstance(value, list) else value
            for name, value in sorted(entry.get("inputs", {}).items())
        }
        return json.dumps([entry["class_type"], inputs], sort_keys=True, default=str)
