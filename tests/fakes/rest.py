"""A fake generic REST service for the rest_sync and rest_async connectors.

Sync:  POST /api/process -> {"echo": body} (or `sync_status` with an error body).
Async: POST /api/submit -> {"id"}; GET /api/status/{id} moves queued -> processing (progress
rising by `progress_step` per poll) -> completed | failed; GET /api/result/{id};
POST /api/cancel/{id}; GET /health.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeService


class FakeRest(FakeService):
    def __init__(self) -> None:
        self.sync_status = 200  # answer /api/process with this status
        self.sync_delay = 0.0  # seconds before /api/process answers
        self.submit_status = 200
        self.id_key = "id"  # or "job_id": both are accepted
        self.progress_step = 50  # per status poll while processing
        self.fail_remote = False  # the remote job ends "failed"
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body)
        self.cancelled: list[str] = []
        self.auth_headers: list[str | None] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        super().__init__(
            Starlette(
                routes=[
                    Route("/api/process", self._process, methods=["POST", "PUT", "GET"]),
                    Route("/api/submit", self._submit, methods=["POST"]),
                    Route("/api/status/{id}", self._status, methods=["GET"]),
                    Route("/api/result/{id}", self._result, methods=["GET"]),
                    Route("/api/cancel/{id}", self._cancel, methods=["POST"]),
                    Route("/health", self._health, methods=["GET"]),
                ]
            )
        )

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else None
        self.requests.append((request.method, request.url.path, body))
        self.auth_headers.append(request.headers.get("authorization"))
        return body

    async def _process(self, request: Request) -> Response:
        body = await self._record(request)
        if self.sync_delay:
            await asyncio.sleep(self.sync_delay)
        if self.sync_status != 200:
            return JSONResponse({"error": f"status {self.sync_status}"}, self.sync_status)
        if request.method == "GET":
            body = dict(request.query_params)
        return JSONResponse({"echo": body})

    async def _submit(self, request: Request) -> Response:
        body = await self._record(request)
        if self.submit_status != 200:
            return JSONResponse({"error": "rejected"}, self.submit_status)
        remote = f"r{next(self._ids)}"
        self._jobs[remote] = {"status": "queued", "progress": 0, "body": body}
        return JSONResponse({self.id_key: remote})

    async def _status(self, request: Request) -> Response:
        await self._record(request)
        job = self._jobs.get(request.path_params["id"])
        if job is None:
            return JSONResponse({"error": "unknown job"}, 404)
        if job["status"] == "queued":
            job["status"] = "processing"
        elif job["status"] == "processing":
            job["progress"] = min(100, job["progress"] + self.progress_step)
            if job["progress"] >= 100:
                job["status"] = "failed" if self.fail_remote else "completed"
                if self.fail_remote:
                    job["error"] = "remote model crashed"
        view = {k: v for k, v in job.items() if k != "body"}
        return JSONResponse(view)

    async def _result(self, request: Request) -> Response:
        await self._record(request)
        job = self._jobs.get(request.path_params["id"])
        if job is None or job["status"] != "completed":
            return JSONResponse({"error": "not ready"}, 409)
        return JSONResponse({"output": job["body"]})

    async def _cancel(self, request: Request) -> Response:
        await self._record(request)
        remote = request.path_params["id"]
        self.cancelled.append(remote)
        if remote in self._jobs:
            self._jobs[remote]["status"] = "cancelled"
        return JSONResponse({"cancelled": True})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})
