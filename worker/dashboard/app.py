"""The per-worker dashboard as a Starlette app: one page, the JSON behind it, three actions.

Everything runs inside the worker's event loop, next to running jobs: hardware sampling (NVML
can take tens of milliseconds) goes to a thread, and is shared between open tabs for a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from shared import __version__
from shared.redaction import redact_url
from shared.redis_client import TRANSIENT_ERRORS
from worker.connectors.output_store import store_origin
from worker.dashboard.http_helpers import (
    AllowedHosts,
    SecurityHeaders,
    allowed_hosts,
    check_token,
    client_host,
    error_response,
    json_response,
    presents_token,
)
from worker.dashboard.page import load_static, template_environment
from worker.dashboard.snapshot import snapshot
from worker.dashboard.worker_view import DashboardWorker

# The name these lines have always carried (operators filter on it), not the module's;
# http_helpers logs refused actions under it too.
logger = logging.getLogger("worker.dashboard_api")

UTILIZATION_TTL = 1.0


class UtilizationSampler:
    """One hardware reading per second at most, taken off the event loop.

    NVML initialisation can take tens of milliseconds and would stall running jobs' progress
    if done on the loop; psutil's CPU figure is measured since the previous call, so several
    tabs polling every 2 s would otherwise make it jitter.
    """

    def __init__(self, sample: Callable[[], dict[str, Any]], ttl: float = UTILIZATION_TTL):
        self._sample = sample
        self._ttl = ttl
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    async def get(self) -> dict[str, Any]:
        if self._value is None or time.monotonic() - self._at >= self._ttl:
            try:
                self._value = await asyncio.to_thread(self._sample)
            except Exception as exc:  # a broken sensor must not break the page
                logger.debug("utilization sample failed: %s", exc)
                self._value = {"error": f"{type(exc).__name__}: {exc}", "gpus": []}
            self._at = time.monotonic()
        return self._value


def create_app(worker: DashboardWorker) -> Starlette:
    """The dashboard app for `worker`: served by DashboardServer, tested in-process."""
    settings = worker.settings
    sampler = UtilizationSampler(worker.utilization)
    page = template_environment().get_template("dashboard.html")
    static = load_static()
    # Thumbnails of stored outputs load from the output store (OUTPUT_STORE), and only there.
    origin = store_origin(settings.env)
    image_origins = (origin,) if origin else ()

    def detail(request: Request) -> bool | Response:
        """Whether this request may see job and customer ids: no token reads the open view,
        the operator's token the full one, a wrong token gets 401 (so a browser tab with a
        stale token learns it)."""
        if not presents_token(request) or not worker.settings.operator_token:
            return False
        denied = check_token(request, worker.settings.operator_token)
        return True if denied is None else denied

    async def index(request: Request) -> Response:
        full = detail(request)
        if isinstance(full, Response):
            return full
        status = snapshot(worker, await sampler.get(), detail=full)
        html = page.render(s=status, version=__version__)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def api_status(request: Request) -> Response:
        full = detail(request)
        if isinstance(full, Response):
            return full
        return json_response(snapshot(worker, await sampler.get(), detail=full))

    async def static_file(request: Request) -> Response:
        found = static.get(request.path_params["name"])
        if found is None:
            return error_response(404, "path", "no such file")
        body, media_type = found
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    async def guarded(
        request: Request, what: str, action: Callable[[], Awaitable[Response]]
    ) -> Response:
        denied = check_token(request, worker.settings.operator_token)
        if denied is not None:
            return denied
        try:
            response = await action()
        except TRANSIENT_ERRORS as exc:
            logger.warning("dashboard: %s failed, Redis unreachable (%s)", what, exc)
            return error_response(503, "", redact_url(f"Redis is unreachable, try again ({exc})"))
        if response.status_code < 400:
            logger.info("dashboard: %s (requested from %s)", what, client_host(request))
        return response

    async def cancel(request: Request) -> Response:
        job_id: str = request.path_params["job_id"]

        async def run() -> Response:
            if not await worker.cancel_job(job_id):
                return error_response(404, "job_id", "no such job running on this worker")
            return json_response({"job_id": job_id, "cancelled": True})

        return await guarded(request, f"cancel job {job_id}", run)

    def state_action(state: str, verb: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            async def run() -> Response:
                await worker.set_state(state)
                return json_response({"state": worker.state})

            return await guarded(request, verb, run)

        return endpoint

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, "", exc.detail, exc.headers)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/status", api_status),
            Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
            Route("/api/pause", state_action("paused", "pause claiming"), methods=["POST"]),
            Route("/api/resume", state_action("active", "resume claiming"), methods=["POST"]),
            Route("/static/{name}", static_file),
        ],
        exception_handlers={HTTPException: http_error},
        middleware=[
            Middleware(SecurityHeaders, image_origins=image_origins),
            Middleware(
                AllowedHosts, hosts=allowed_hosts(settings.dashboard_hosts, settings.dashboard_host)
            ),
        ],
    )
