"""Runs API-format workflows on a stock ComfyUI over its HTTP + WebSocket API.

Per job: open `/ws?clientId=<fresh id>` first (ComfyUI sends a prompt's events only to the
socket named in its client_id, and drops them when that socket is not connected), then
`POST /prompt` with a prompt_id we choose (so cancellation can name the prompt before the
POST returns), follow the socket until the run ends, then read `/history/{id}` and fetch the
output files through `/view`.

Settings: the COMFYUI section below (listed in release/.env.worker.example).

Payload: {"workflow": {...}} (also accepted: "prompt", or the bare graph), optional
"extra_data" passed through to ComfyUI (extra_pnginfo, API-node keys).

Warm models: ComfyUI has no endpoint that says which models it holds (neither
`/system_stats`, which gives only free VRAM, nor `/object_info`, which lists the files it
could load), so the connector reports the files the loader nodes of its latest successful
workflows named (shared/model_refs.py), at most COMFYUI_WARM_MODELS, the latest first, and
forgets them all when ComfyUI stops answering (a restarted ComfyUI holds nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed

from shared.model_refs import comfyui_models
from shared.setting import integer, number, optional_text
from shared.setting_section import Section
from worker.connectors.base import (
    Connector,
    Health,
    JobCancelled,
    JobContext,
    JobFailed,
    ProgressFn,
)
from worker.connectors.comfyui_protocol import (
    ComfyRunTracker,
    RunFinished,
    RunProgress,
    describe_execution_error,
    describe_prompt_rejection,
    outcome_from_history,
    output_files,
    system_info,
)
from worker.connectors.comfyui_transfer import (
    CANCEL,
    POLL,
    WS_ERRORS,
    ComfySocket,
    fetch_outputs,
    store_outputs,
)
from worker.connectors.httpcommon import (
    HttpService,
    auth_headers,
    body_excerpt,
    response_json,
    status_failure,
)
from worker.connectors.output_store import OutputStore
from worker.connectors.setting_kinds import http_url
from worker.connectors.util import bad_payload, until_cancelled, wait_cancelled
from worker.connectors.warm import WarmModels

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
STOP_TIMEOUT: Final = 5.0

COMFYUI = Section("ComfyUI connector (SERVICES=comfyui)")
COMFYUI_URL = COMFYUI.add(http_url("COMFYUI_URL", "http://127.0.0.1:8188", doc="ComfyUI's address"))
COMFYUI_AUTH_HEADER = COMFYUI.add(
    optional_text(
        "COMFYUI_AUTH_HEADER",
        doc="Whole Authorization header value sent to ComfyUI, e.g. Bearer xyz; empty: none",
        secret=True,
    )
)
COMFYUI_MAX_INLINE_BYTES = COMFYUI.add(
    integer(
        "COMFYUI_MAX_INLINE_BYTES",
        8 * MIB,
        lo=0,
        doc="Output bytes per job returned inline (base64); the rest are returned as references",
    )
)
COMFYUI_TIMEOUT_SECONDS = COMFYUI.add(
    number("COMFYUI_TIMEOUT_SECONDS", 30.0, lo=0.1, doc="Timeout of each HTTP request to ComfyUI")
)
COMFYUI_POLL_SECONDS = COMFYUI.add(
    number(
        "COMFYUI_POLL_SECONDS",
        1.0,
        lo=0.01,
        doc="History polling interval after the WebSocket was lost",
    )
)
COMFYUI_RECONNECT_SECONDS = COMFYUI.add(
    number(
        "COMFYUI_RECONNECT_SECONDS",
        60.0,
        lo=0,
        doc="How long a dropped WebSocket may take to come back before the job fails",
    )
)
COMFYUI_WARM_MODELS = COMFYUI.add(
    integer(
        "COMFYUI_WARM_MODELS",
        8,
        lo=0,
        hi=4096,
        doc="Models of the latest workflows' loader nodes reported warm (loaded); 0: none",
    )
)
COMFYUI_CANCEL_GRACE_SECONDS = COMFYUI.add(
    number(
        "COMFYUI_CANCEL_GRACE_SECONDS",
        5.0,
        lo=0,
        doc="How long to wait for ComfyUI to confirm an interrupt",
    )
)


@dataclass(slots=True)
class _Run:
    job_id: str
    prompt_id: str
    submitted: bool = False  # POST /prompt was sent: the prompt may exist in ComfyUI
    ended: bool = False  # ComfyUI reported the run's end
    stop_sent: bool = False


class ComfyUIConnector(Connector):
    name = "comfyui"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = env or {}
        self.base_url = COMFYUI_URL.read(values)
        self._headers = auth_headers(COMFYUI_AUTH_HEADER.read(values))
        self.max_inline_bytes = COMFYUI_MAX_INLINE_BYTES.read(values)
        self.timeout = COMFYUI_TIMEOUT_SECONDS.read(values)
        self.poll_seconds = COMFYUI_POLL_SECONDS.read(values)
        self.reconnect_seconds = COMFYUI_RECONNECT_SECONDS.read(values)
        self.cancel_grace = COMFYUI_CANCEL_GRACE_SECONDS.read(values)
        self.ws_url = "ws" + self.base_url.removeprefix("http") + "/ws"
        self.http = HttpService(
            "ComfyUI", self.base_url, timeout=self.timeout, headers=self._headers
        )
        self._runs: dict[str, _Run] = {}
        self._warm = WarmModels(COMFYUI_WARM_MODELS.read(values))
        # With OUTPUT_STORE set, outputs go there and COMFYUI_MAX_INLINE_BYTES no longer applies
        # (OUTPUT_INLINE_MAX_BYTES does).
        self.store = OutputStore.from_env(values)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        health = await self.health()
        if health.ok:
            log.info("ComfyUI at %s: %s", self.base_url, health.detail)
        else:
            log.warning("ComfyUI at %s is not usable yet: %s", self.base_url, health.detail)

    async def health(self) -> Health:
        try:
            response = await self.http.request("GET", "/system_stats")
        except JobFailed as exc:
            self._warm.clear()
            return Health(ok=False, detail=exc.message)
        if response.status_code != 200:
            self._warm.clear()
            return Health(ok=False, detail=f"/system_stats answered {response.status_code}")
        info = system_info(response_json(response))
        return Health(ok=True, detail=f"ComfyUI {info.get('version') or '?'}", info=info)

    def warm_models(self) -> Sequence[str]:
        return self._warm.names()

    async def close(self) -> None:
        await self.http.aclose()
        if self.store is not None:
            await self.store.aclose()

    async def interrupt(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is not None:
            await self._stop(run)

    # --- one job -------------------------------------------------------------------------

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        workflow = _workflow(job.payload)
        extra_data = job.payload.get("extra_data")
        if extra_data is not None and not isinstance(extra_data, Mapping):
            raise bad_payload("extra_data", "expected an object")
        run = _Run(job.job_id, str(uuid.uuid4()))
        self._runs[job.job_id] = run
        client_id = uuid.uuid4().hex
        stream = ComfySocket(f"{self.ws_url}?clientId={client_id}", self._headers, self.timeout)
        try:
            try:
                await until_cancelled(stream.open(), cancel)
            except WS_ERRORS as exc:
                raise JobFailed(
                    f"cannot open ComfyUI's WebSocket at {self.ws_url}: {exc}", retryable=True
                ) from exc
            body: dict[str, Any] = {
                "prompt": workflow,
                "client_id": client_id,
                "prompt_id": run.prompt_id,
            }
            if extra_data is not None:
                body["extra_data"] = dict(extra_data)
            run.prompt_id = await until_cancelled(self._submit(run, body), cancel)
            await progress(0.0, "queued in ComfyUI")
            tracker = ComfyRunTracker(run.prompt_id, workflow)
            finished = await self._follow(run, tracker, stream, progress, cancel)
            run.ended = True
            if finished.status == "success":
                self._warm.used(comfyui_models(workflow))
            await stream.close()
            return await self._conclude(job, run, tracker, finished, progress, cancel)
        except JobCancelled:
            if run.submitted:
                await self._stop(run)
            raise
        except BaseException:
            # Lost socket, a failing progress callback, the task itself cancelled: whatever
            # ends this run early must not leave the prompt occupying the GPU.
            if run.submitted and not run.ended:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._stop(run), STOP_TIMEOUT)
            raise
        finally:
            self._runs.pop(job.job_id, None)
            await stream.close()

    async def _submit(self, run: _Run, body: Mapping[str, Any]) -> str:
        # From here until ComfyUI answers, a cancel cannot know whether the prompt was queued.
        run.submitted = True
        response = await self.http.request("POST", "/prompt", json_body=body)
        if response.status_code != 200:
            run.submitted = False  # refused: there is nothing to stop
        if response.status_code == 200:
            answer = response_json(response)
            prompt_id = answer.get("prompt_id") if isinstance(answer, Mapping) else None
            # Builds older than client-chosen ids answer with their own; follow that one.
            return str(prompt_id or body["prompt_id"])
        if response.status_code == 400:
            parsed = response_json(response)
            message, node_errors = describe_prompt_rejection(parsed)
            if parsed is None:
                message = f"{message}: {body_excerpt(response)}"
            raise JobFailed(message, retryable=False, details=node_errors)
        # 5xx (e.g. a body ComfyUI could not parse, "Server got itself in trouble"), or auth and
        # routing problems of this worker: another attempt, maybe elsewhere, may succeed.
        failure = status_failure("ComfyUI", response, "prompt")
        failure.retryable = True
        raise failure

    async def _follow(
        self,
        run: _Run,
        tracker: ComfyRunTracker,
        stream: ComfySocket,
        progress: ProgressFn,
        cancel: asyncio.Event,
    ) -> RunFinished:
        degraded = False  # after a reconnect: messages were lost, so poll history when idle
        cancel_waiter: asyncio.Future[Any] = asyncio.ensure_future(cancel.wait())
        try:
            while True:
                if cancel.is_set():
                    await self._cancel_run(run, tracker, stream)
                try:
                    frame = await stream.recv(
                        cancel_waiter, self.poll_seconds if degraded else None
                    )
                except ConnectionClosed:
                    log.warning(
                        "ComfyUI socket dropped during prompt %s; reconnecting", run.prompt_id
                    )
                    finished = await self._reconnect(run, stream, cancel)
                    if finished is not None:
                        return finished
                    degraded, frame = True, POLL
                if frame is CANCEL:
                    continue
                if frame is POLL:
                    with contextlib.suppress(JobFailed):  # the socket still works: keep going
                        finished = await self._outcome_from_history(run.prompt_id)
                        if finished is not None:
                            return finished
                    continue
                assert isinstance(frame, str | bytes)
                event = tracker.feed_frame(frame)
                if isinstance(event, RunFinished):
                    return event
                if isinstance(event, RunProgress):
                    await progress(event.percent, event.message)
        finally:
            cancel_waiter.cancel()

    async def _reconnect(
        self, run: _Run, stream: ComfySocket, cancel: asyncio.Event
    ) -> RunFinished | None:
        """Reopen the socket with the same clientId, so ComfyUI resumes sending our events.
        Whatever was sent meanwhile is lost, so the caller checks history right after."""
        deadline = time.monotonic() + self.reconnect_seconds
        delay = 0.05
        while True:
            try:
                await until_cancelled(stream.open(), cancel)
                return None
            except WS_ERRORS as exc:
                error = exc
            with contextlib.suppress(JobFailed):  # HTTP may work while the socket does not
                finished = await self._outcome_from_history(run.prompt_id)
                if finished is not None:
                    return finished
            if time.monotonic() >= deadline:
                raise JobFailed(
                    f"lost ComfyUI's WebSocket during prompt {run.prompt_id} and could not "
                    f"reconnect within {self.reconnect_seconds:g} s: {error}",
                    retryable=True,
                    details={"prompt_id": run.prompt_id},
                )
            if await wait_cancelled(cancel, delay):
                raise JobCancelled("cancelled while reconnecting to ComfyUI")
            delay = min(delay * 2, 2.0)

    async def _cancel_run(self, run: _Run, tracker: ComfyRunTracker, stream: ComfySocket) -> None:
        """Stop the prompt, give ComfyUI a moment to confirm (so the GPU is really free when
        the worker takes its next job), then raise JobCancelled either way."""
        await self._stop(run)
        if tracker.started and stream.ws is not None:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                async with asyncio.timeout(self.cancel_grace):
                    while tracker.finished is None:
                        tracker.feed_frame(await stream.ws.recv())
        raise JobCancelled(f"cancelled; asked ComfyUI to stop prompt {run.prompt_id}")

    async def _stop(self, run: _Run) -> None:
        """Remove the prompt from the queue, then interrupt it if it runs. Deleting first closes
        the race where a pending prompt starts between the two calls and runs to the end."""
        if run.stop_sent:
            return
        run.stop_sent = True
        for path, body in (
            ("/queue", {"delete": [run.prompt_id]}),
            ("/interrupt", {"prompt_id": run.prompt_id}),
        ):
            try:
                await self.http.request("POST", path, json_body=body)
            except JobFailed as exc:
                log.warning("could not POST %s for prompt %s: %s", path, run.prompt_id, exc)

    async def _conclude(
        self,
        job: JobContext,
        run: _Run,
        tracker: ComfyRunTracker,
        finished: RunFinished,
        progress: ProgressFn,
        cancel: asyncio.Event,
    ) -> dict[str, Any]:
        if finished.status == "error":
            details = {k: v for k, v in finished.data.items() if k != "current_inputs"}
            raise JobFailed(
                describe_execution_error(finished.data), retryable=True, details=details
            )
        if finished.status == "interrupted":
            if run.stop_sent or cancel.is_set():
                raise JobCancelled(f"ComfyUI interrupted prompt {run.prompt_id} as asked")
            raise JobFailed(
                f"prompt {run.prompt_id} was interrupted by someone else on this ComfyUI",
                retryable=True,
                details=dict(finished.data),
            )
        entry = await self._history_entry_after_success(run.prompt_id, cancel)
        outputs = entry.get("outputs") if entry is not None else None
        if not isinstance(outputs, Mapping):
            outputs = tracker.outputs  # what `executed` told us, if history is unavailable
        files = list(output_files(outputs))
        if files and self.store is not None:
            await progress(99.0, f"storing {len(files)} output file(s) in {self.store.store.name}")
            images = await until_cancelled(
                store_outputs(self.http.client, self.store, job, files), cancel
            )
            return {"prompt_id": run.prompt_id, "outputs": dict(outputs), "images": images}
        if files:
            await progress(99.0, f"fetching {len(files)} output file(s)")
        images = await until_cancelled(
            fetch_outputs(self.http.client, self.base_url, files, self.max_inline_bytes), cancel
        )
        return {"prompt_id": run.prompt_id, "outputs": dict(outputs), "images": images}

    # --- history and files ---------------------------------------------------------------

    async def _history_entry(self, prompt_id: str) -> Mapping[str, Any] | None:
        response = await self.http.request("GET", f"/history/{quote(prompt_id, safe='')}")
        if response.status_code != 200:
            raise status_failure("ComfyUI", response, "history request")
        body = response_json(response)
        entry = body.get(prompt_id) if isinstance(body, Mapping) else None
        return entry if isinstance(entry, Mapping) else None

    async def _outcome_from_history(self, prompt_id: str) -> RunFinished | None:
        entry = await self._history_entry(prompt_id)
        return None if entry is None else outcome_from_history(entry)

    async def _history_entry_after_success(
        self, prompt_id: str, cancel: asyncio.Event
    ) -> Mapping[str, Any] | None:
        # ComfyUI writes history before the final `executing`, but a proxy or an older build
        # may lag; a few polls cost little, and `executed` messages remain as a fallback.
        for attempt in range(5):
            entry = await self._history_entry(prompt_id)
            if entry is not None:
                return entry
            if await wait_cancelled(cancel, min(self.poll_seconds, 0.2) * (attempt + 1)):
                raise JobCancelled("cancelled while reading ComfyUI's history")
        return None


def _workflow(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The API-format graph: `workflow`, the old connector's `prompt`, or the payload itself."""
    graph: Any = payload.get("workflow", payload.get("prompt"))
    field = "workflow"
    if graph is None and payload and all(_is_node(n) for n in payload.values()):
        graph = payload
    if isinstance(graph, Mapping) and isinstance(graph.get("nodes"), list):
        raise bad_payload(
            field, "this is a UI-format workflow; export it with 'Save (API Format)' instead"
        )
    if not isinstance(graph, Mapping) or not graph:
        raise bad_payload(field, "expected a non-empty API-format workflow object")
    for node_id, node in graph.items():
        if not _is_node(node):
            raise bad_payload(
                f"{field}.{node_id}", "expected a node object with a string class_type"
            )
    return graph


def _is_node(node: Any) -> bool:
    return isinstance(node, Mapping) and isinstance(node.get("class_type"), str)
