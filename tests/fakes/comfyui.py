"""A fake ComfyUI 0.8.0 that speaks the protocol recorded in tests/fixtures/comfyui.

It knows the recorded node classes (EmptyImage, SlowImage, SaveImage) and executes them the
way the real server did: per-client event routing, the exact message order (see the fixtures'
README), node caching, interrupts, execution errors, history, `/view` of a real PNG, and
reconnect behaviour (messages for a closed socket are dropped; a reconnect gets `status` and
the current node as `executing` without prompt_id). Knobs override what workflows ask for so
recorded workflows run in milliseconds.

    with FakeComfyUI(step_delay=0.002) as fake:
        connector = ComfyUIConnector({"COMFYUI_URL": fake.url})
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.comfyui_run import ComfyExecutor, Prompt
from tests.fakes.comfyui_validation import (
    Rejected,
    load_recording,
    recorded_object_info,
    validate_prompt,
)
from tests.fakes.server import FakeService

SYSTEM_STATS: dict[str, Any] = load_recording("system_stats")["steps"][0]["response"]["json"]
FEATURES: dict[str, Any] = load_recording("system_stats")["steps"][1]["response"]["json"]
_CLOSE = object()


class _Client:
    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.preview_metadata = False


class FakeComfyUI(FakeService):
    def __init__(
        self,
        *,
        steps: int | None = None,
        step_delay: float | None = 0.002,
        fail_at_step: int | None = None,
        preview: bool | None = None,
        cache: bool = True,
    ) -> None:
        # Knobs (None: do what the workflow says). Tests may change them between runs.
        self.steps = steps
        self.step_delay = step_delay
        self.fail_at_step = fail_at_step
        self.preview = preview
        self.cache = cache
        self.drop_ws_after_progress: int | None = None  # server closes the socket mid-run
        self.refuse_ws_while_running = False  # ... and refuses reconnects until the run ends
        self.prompt_500 = False  # POST /prompt answers the recorded 500 text/plain
        # Counters and records, for assertions.
        self.prompts: list[dict[str, Any]] = []  # accepted POST /prompt bodies
        self.interrupts: list[Any] = []  # POST /interrupt bodies (None when empty)
        self.queue_posts: list[Any] = []  # POST /queue bodies
        self.ws_connects: list[str] = []  # clientIds, in connection order
        self.views: list[str] = []  # filenames fetched through /view
        self.events: list[str] = []  # "ws:<clientId>" / "prompt:<prompt_id>", in order
        self.history: dict[str, dict[str, Any]] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.object_info = recorded_object_info()
        self._clients: dict[str, _Client] = {}
        self._number = 0
        self._executor = ComfyExecutor(self)
        super().__init__(self._app())

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._server.call(self._close_all)  # end the WebSockets first: they hold shutdown
        super().close()

    def pause(self) -> None:
        """Hold the queue: prompts posted from now on stay pending until resume()."""
        self._on_server_loop(self._executor.gate.clear)

    def resume(self) -> None:
        self._on_server_loop(self._executor.gate.set)

    def _on_server_loop(self, fn: Any) -> None:
        if self._server.loop is None:
            fn()
        else:
            self._server.call(fn)

    def _close_all(self) -> None:
        for client in self._clients.values():
            client.outbox.put_nowait(_CLOSE)

    # --- what the executor uses ----------------------------------------------------------

    @property
    def current_node(self) -> str | None:
        """The node the running prompt is executing, if any."""
        running = self._executor.running
        return running.current_node if running is not None else None

    @property
    def queue_remaining(self) -> int:
        return self._executor.queue_remaining

    def send(self, sid: str | None, kind: str, data: dict[str, Any]) -> None:
        client = self._clients.get(sid) if sid else None
        if client is not None:
            client.outbox.put_nowait(json.dumps({"type": kind, "data": data}))

    def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        for client in list(self._clients.values()):
            client.outbox.put_nowait(json.dumps({"type": kind, "data": data}))

    def broadcast_status(self) -> None:
        self.broadcast(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining}}}
        )

    def send_preview(self, sid: str | None, prompt_id: str, node: str, before_text: bool) -> None:
        """Legacy clients get event 1 after the progress text; clients that negotiated
        supports_preview_metadata get event 4 before it (as recorded)."""
        client = self._clients.get(sid) if sid else None
        if client is None or client.preview_metadata != before_text:
            return
        jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 60
        if client.preview_metadata:
            meta = json.dumps(
                {
                    "node_id": node,
                    "prompt_id": prompt_id,
                    "display_node_id": node,
                    "parent_node_id": None,
                    "real_node_id": node,
                    "image_type": "image/jpeg",
                }
            ).encode()
            frame = struct.pack(">II", 4, len(meta)) + meta + jpeg
        else:
            frame = struct.pack(">II", 1, 1) + jpeg
        client.outbox.put_nowait(frame)

    def drop_socket(self, sid: str | None) -> None:
        client = self._clients.get(sid) if sid else None
        if client is not None:
            client.outbox.put_nowait(_CLOSE)

    # --- routes --------------------------------------------------------------------------

    def _app(self) -> Starlette:
        routes: list[BaseRoute] = []
        for prefix in ("", "/api"):  # ComfyUI serves every route under both
            routes += [
                WebSocketRoute(prefix + "/ws", self._ws),
                Route(prefix + "/prompt", self._post_prompt, methods=["POST"]),
                Route(prefix + "/prompt", self._get_prompt, methods=["GET"]),
                Route(prefix + "/queue", self._get_queue, methods=["GET"]),
                Route(prefix + "/queue", self._post_queue, methods=["POST"]),
                Route(prefix + "/interrupt", self._interrupt, methods=["POST"]),
                Route(prefix + "/history", self._history_list, methods=["GET"]),
                Route(prefix + "/history/{prompt_id}", self._history_one, methods=["GET"]),
                Route(prefix + "/view", self._view, methods=["GET"]),
                Route(prefix + "/system_stats", self._system_stats, methods=["GET"]),
                Route(prefix + "/features", self._features, methods=["GET"]),
                Route(prefix + "/object_info", self._object_info_all, methods=["GET"]),
                Route(prefix + "/object_info/{cls}", self._object_info_one, methods=["GET"]),
            ]
        return Starlette(routes=routes)

    async def _ws(self, websocket: WebSocket) -> None:
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        if self.refuse_ws_while_running and self._executor.running is not None:
            await websocket.close()  # before accept: the handshake fails with 403
            return
        await websocket.accept()
        client = _Client(sid)
        self._clients[sid] = client  # a reconnect replaces the old socket, as upstream
        self.ws_connects.append(sid)
        self.events.append(f"ws:{sid}")
        status = {"status": {"exec_info": {"queue_remaining": self.queue_remaining}}, "sid": sid}
        client.outbox.put_nowait(json.dumps({"type": "status", "data": status}))
        running = self._executor.running
        if running is not None and running.client_id == sid and running.current_node:
            # What a reconnecting client gets: the current node, without prompt_id.
            message = {"type": "executing", "data": {"node": running.current_node}}
            client.outbox.put_nowait(json.dumps(message))
        sender = asyncio.create_task(self._pump(websocket, client))
        try:
            first = True
            while True:
                text = await websocket.receive_text()
                if first:
                    self._maybe_feature_flags(client, text)
                first = False
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            sender.cancel()
            if self._clients.get(sid) is client:
                del self._clients[sid]

    def _maybe_feature_flags(self, client: _Client, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            data = message.get("data") or {}
            client.preview_metadata = bool(data.get("supports_preview_metadata"))
            client.outbox.put_nowait(json.dumps({"type": "feature_flags", "data": FEATURES}))

    async def _pump(self, websocket: WebSocket, client: _Client) -> None:
        while True:
            item = await client.outbox.get()
            if item is _CLOSE:
                if self._clients.get(client.sid) is client:
                    del self._clients[client.sid]  # from now on, its messages are lost
                await websocket.close(code=1001)
                return
            if isinstance(item, bytes):
                await websocket.send_bytes(item)
            else:
                await websocket.send_text(item)

    async def _post_prompt(self, request: Request) -> Response:
        self._number += 1  # rejected prompts use up a number too
        try:
            body = json.loads(await request.body())
            if self.prompt_500:
                raise ValueError("knob: prompt_500")
        except ValueError:
            return PlainTextResponse(
                "500 Internal Server Error\n\nServer got itself in trouble", status_code=500
            )
        if not isinstance(body, dict) or "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return JSONResponse({"error": error, "node_errors": {}}, status_code=400)
        try:
            outputs, node_errors = validate_prompt(body["prompt"], self.object_info)
        except Rejected as rejected:
            return JSONResponse(rejected.body, status_code=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra_data = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = int(time.time() * 1000)
        self.prompts.append(body)
        self.events.append(f"prompt:{prompt_id}")
        prompt = Prompt(self._number, prompt_id, body["prompt"], extra_data, outputs)
        self._executor.enqueue(prompt)
        self.broadcast_status()
        answer = {"prompt_id": prompt_id, "number": self._number, "node_errors": node_errors}
        return JSONResponse(answer)

    async def _get_prompt(self, request: Request) -> Response:
        return JSONResponse({"exec_info": {"queue_remaining": self.queue_remaining}})

    async def _get_queue(self, request: Request) -> Response:
        running = self._executor.running
        return JSONResponse(
            {
                "queue_running": [running.as_list()] if running else [],
                "queue_pending": [p.as_list() for p in self._executor.pending],
            }
        )

    async def _post_queue(self, request: Request) -> Response:
        body = await _json_or_none(request)
        self.queue_posts.append(body)
        if isinstance(body, dict):
            if body.get("clear"):
                self._executor.pending.clear()
            for prompt_id in body.get("delete") or []:
                self._executor.pending[:] = [
                    p for p in self._executor.pending if p.prompt_id != prompt_id
                ]
            self.broadcast_status()
            self.broadcast_status()
        return Response(status_code=200)

    async def _interrupt(self, request: Request) -> Response:
        body = await _json_or_none(request)
        self.interrupts.append(body)
        running = self._executor.running
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if running is not None and (wanted is None or wanted == running.prompt_id):
            running.interrupted = True
        return Response(status_code=200)  # empty body, no content type, like upstream

    async def _history_list(self, request: Request) -> Response:
        items = list(self.history.items())
        max_items = request.query_params.get("max_items")
        if max_items:
            items = items[-int(max_items) :]
        return JSONResponse(dict(items))

    async def _history_one(self, request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        entry = self.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry is not None else {})

    async def _view(self, request: Request) -> Response:
        params = request.query_params
        filename = params.get("filename")
        if not filename:
            return Response(status_code=404)
        kind = params.get("type", "output")
        subfolder = params.get("subfolder", "")
        if filename.startswith("/") or ".." in filename or kind not in ("output", "input", "temp"):
            return Response(status_code=400)
        data = self.files.get((kind, subfolder, filename))
        if data is None:
            return Response(status_code=404)
        self.views.append(filename)
        disposition = {"Content-Disposition": f'filename="{filename}"'}
        return Response(data, media_type="image/png", headers=disposition)

    async def _system_stats(self, request: Request) -> Response:
        return JSONResponse(SYSTEM_STATS)

    async def _features(self, request: Request) -> Response:
        return JSONResponse(FEATURES)

    async def _object_info_all(self, request: Request) -> Response:
        return JSONResponse(self.object_info)

    async def _object_info_one(self, request: Request) -> Response:
        cls = request.path_params["cls"]
        info = self.object_info.get(cls)
        return JSONResponse({cls: info} if info is not None else {})  # unknown: 200 {}


async def _json_or_none(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
