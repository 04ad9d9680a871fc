"""The per-worker dashboard as a Starlette app: one page, the JSON behind it, three actions.

Why it is built this way:

- Reading is open, acting is not. The dashboard listens on 127.0.0.1 by default and
  `GET /api/status` carries nothing secret (no claim tokens, no HUB_AUTH_TOKEN, no passwords in
  URLs), so an operator can look without credentials. Cancelling a job or pausing the worker
  changes what a GPU box does, so those need `Authorization: Bearer <HUB_AUTH_TOKEN>`; with no
  token configured they are refused (403) rather than left open to anyone who can reach the port.
- The page is rendered on the server from the very snapshot the JSON API returns (so it reads
  right without JavaScript), then `static/dashboard.js` refreshes it every 2 s from
  `/api/status`. There is no inline script or style, so a strict Content-Security-Policy holds.
- Everything runs inside the worker's event loop, next to running jobs: hardware sampling (NVML
  can take tens of milliseconds) goes to a thread, and is shared between open tabs for a second.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import importlib.resources
import itertools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import jinja2
import msgspec
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import __version__
from shared.capabilities import Capabilities
from shared.redis_client import TRANSIENT_ERRORS
from worker.connectors.base import Health
from worker.hardware import HardwareInfo
from worker.hardware_report import to_report
from worker.job_runner import Outcome, RunningJob
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 100
REFRESH_SECONDS = 2
UTILIZATION_TTL = 1.0
# A service's error can be a page of node errors; the table needs the gist, and every open
# tab downloads the whole history every 2 s.
MAX_TEXT = 500
TOKEN_FIELD = "Authorization"
NO_VALUE = "\u2013"  # an en dash: shown where there is no reading yet
NO_TOKEN_MESSAGE = "actions are disabled: HUB_AUTH_TOKEN must be set for this worker"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

# Outcomes that say something about this worker's success; cancelled / released / stale jobs
# were stopped by someone else and count neither way.
JUDGED = ("completed", "failed", "retrying")

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|authorization|credential|cookie|private[-_]?key",
    re.IGNORECASE,
)


class DashboardWorker(Protocol):
    """What the dashboard reads from and asks of `worker.runtime.Worker` (a stand-in for tests
    needs only these)."""

    @property
    def id(self) -> str: ...
    @property
    def settings(self) -> WorkerSettings: ...
    @property
    def started(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def running(self) -> Mapping[str, RunningJob]: ...
    @property
    def history(self) -> Iterable[Outcome]: ...
    @property
    def health(self) -> Mapping[str, Health]: ...
    @property
    def capabilities(self) -> Capabilities: ...
    @property
    def heartbeat_age(self) -> float | None: ...
    @property
    def hardware(self) -> HardwareInfo: ...
    @property
    def dashboard_url(self) -> str | None: ...
    def utilization(self) -> dict[str, Any]: ...
    async def cancel_job(self, job_id: str) -> bool: ...
    async def set_state(self, state: str) -> None: ...


# -- keeping secrets out ------------------------------------------------------------------------


def redact_url(text: str) -> str:
    """`redis://user:pw@host/0` -> `redis://***@host/0`, wherever a URL appears in `text`:
    connector errors and health details quote the URL they failed to reach."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def scrub(value: Any) -> Any:
    """Redact URL credentials in every string and the value of every secret-looking key.

    Applied to the whole snapshot as a last line of defence: health `info` and error messages
    come from third-party services and may echo back whatever they were sent.
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


# -- the snapshot -------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: always a value that was observed, None for no data."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def job_stats(outcomes: list[Outcome]) -> dict[str, Any]:
    """Success rate over judged outcomes; processing time over completed jobs only, because
    a failure that happens at once would otherwise flatter the percentiles."""
    counts = collections.Counter(o.status for o in outcomes)
    judged = sum(counts[s] for s in JUDGED)
    durations = sorted(o.seconds for o in outcomes if o.status == "completed")
    p50, p95 = percentile(durations, 50), percentile(durations, 95)
    return {
        "jobs": len(outcomes),
        "counts": dict(counts),
        "success_rate": round(100 * counts["completed"] / judged, 1) if judged else None,
        "p50_seconds": None if p50 is None else round(p50, 3),
        "p95_seconds": None if p95 is None else round(p95, 3),
    }


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 1] + "\u2026"


def _running_view(rj: RunningJob, now: float) -> dict[str, Any]:
    job = rj.job  # never rj.token: it is the fencing token that lets its holder report
    return {
        "job_id": job.id,
        "service_type": job.service_type,
        "customer_id": job.customer_id,
        "priority": job.priority,
        "attempt": job.attempts + 1,
        "timeout_seconds": job.timeout_seconds,
        "progress": round(rj.progress, 1),
        "message": _clip(rj.message),
        "started_at": _iso(rj.started),
        "elapsed_seconds": round(max(0.0, now - rj.started), 1),
        "cancelling": rj.cancel.is_set(),
    }


def _outcome_view(o: Outcome) -> dict[str, Any]:
    return {
        "job_id": o.job_id,
        "status": o.status,
        "error": _clip(o.error),
        "seconds": round(o.seconds, 3),
        "finished_at": _iso(o.finished),
    }


RESOURCE_FIELDS = ("cpu_percent", "ram_used_gb", "ram_total_gb", "ram_percent", "gpu_error")
GPU_FIELDS = ("utilization_gpu", "memory_used_gb", "memory_total_gb", "error")


def _resources(utilization: Mapping[str, Any], hardware: HardwareInfo) -> dict[str, Any]:
    """The live sample with every field the page shows present (a failed reading has fewer),
    and each GPU's name, known from detection rather than sampled again."""
    names = {g.index: g.name for g in hardware.gpus}
    gpus = [g for g in utilization.get("gpus") or [] if isinstance(g, Mapping)]
    return {
        **dict.fromkeys(RESOURCE_FIELDS),
        **utilization,
        "gpus": [
            {**dict.fromkeys(GPU_FIELDS), "name": names.get(g.get("index", -1)), **g} for g in gpus
        ],
    }


def snapshot(
    worker: DashboardWorker, utilization: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """Everything the page shows, JSON-ready and scrubbed of secrets."""
    now = time.time() if now is None else now
    settings = worker.settings
    running = sorted(worker.running.values(), key=lambda rj: rj.started)
    outcomes = list(itertools.islice(worker.history, HISTORY_LIMIT))
    age = worker.heartbeat_age
    doc = {
        "worker": {
            "id": worker.id,
            "version": __version__,
            "type": settings.worker_type,
            "status": worker.status,
            "state": worker.state,
            "started_at": _iso(worker.started),
            "uptime_seconds": round(max(0.0, now - worker.started), 1),
            "heartbeat_age_seconds": None if age is None else round(age, 1),
            # Three missed beats: the hub will soon consider this worker dead.
            "heartbeat_late": age is None or age > 3 * settings.broker.heartbeat_interval,
            "slots": {"total": settings.concurrent_jobs, "busy": len(running)},
            "services": list(settings.services),
            "redis": redact_url(settings.redis_url),
            "dashboard_url": worker.dashboard_url,
        },
        "controls": {
            "enabled": bool(settings.auth_token),
            "reason": None if settings.auth_token else NO_TOKEN_MESSAGE,
        },
        "running": [_running_view(rj, now) for rj in running],
        "history": [_outcome_view(o) for o in outcomes],
        "stats": job_stats(outcomes),
        "resources": _resources(utilization, worker.hardware),
        "hardware": to_report(worker.hardware),
        "connectors": [
            {"name": name, "ok": h.ok, "detail": h.detail, "info": dict(h.info)}
            for name, h in sorted(worker.health.items())
        ],
        "capabilities": msgspec.to_builtins(worker.capabilities),
        "refresh_seconds": REFRESH_SECONDS,
        "generated_at": _iso(now),
    }
    scrubbed: dict[str, Any] = scrub(doc)
    return scrubbed


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


# -- HTTP plumbing ------------------------------------------------------------------------------


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    merged = {"cache-control": "no-store", **(headers or {})}
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=merged
    )


def error_response(
    status: int, field: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The project-wide error shape: `{"error": {"field": ..., "message": ...}}`."""
    return json_response({"error": {"field": field, "message": message}}, status, headers)


def check_token(request: Request, expected: str | None) -> Response | None:
    """None when the request carries the right bearer token, else the error to answer.

    `hmac.compare_digest` keeps the comparison time independent of how much matched.
    """
    if not expected:
        return error_response(403, TOKEN_FIELD, NO_TOKEN_MESSAGE)
    challenge = {"www-authenticate": 'Bearer realm="emp-worker"'}
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        message = "missing token: send Authorization: Bearer <HUB_AUTH_TOKEN>"
        return error_response(401, TOKEN_FIELD, message, challenge)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        logger.warning("dashboard: action refused, wrong token (from %s)", _client(request))
        return error_response(401, TOKEN_FIELD, "wrong token", challenge)
    return None


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which breaks contextvars): every answer
    forbids framing, sniffing and off-origin scripts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def load_static() -> dict[str, tuple[bytes, str]]:
    """Read `worker/static/*` once, through importlib.resources so it also works from the
    zipapp; only a fixed set of names is ever served, so no path can escape the folder."""
    folder = importlib.resources.files("worker").joinpath("static")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("worker", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a template typo fails the tests, not the operator
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    env.filters["number"] = format_number
    return env


def format_duration(seconds: float | None) -> str:
    """Seconds for humans: 0.42s, 12.3s, 4m 05s, 3h 07m, 2d 04h (mirrored in dashboard.js)."""
    if seconds is None:
        return NO_VALUE
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def format_number(value: float | None, suffix: str = "", digits: int = 1) -> str:
    return NO_VALUE if value is None else f"{value:.{digits}f}{suffix}"


# -- the app ------------------------------------------------------------------------------------


def create_app(worker: DashboardWorker) -> Starlette:
    """The dashboard app for `worker`: served by DashboardServer, tested in-process."""
    sampler = UtilizationSampler(worker.utilization)
    page = template_environment().get_template("dashboard.html")
    static = load_static()

    async def index(request: Request) -> Response:
        status = snapshot(worker, await sampler.get())
        html = page.render(s=status, version=__version__)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    async def api_status(request: Request) -> Response:
        return json_response(snapshot(worker, await sampler.get()))

    async def static_file(request: Request) -> Response:
        found = static.get(request.path_params["name"])
        if found is None:
            return error_response(404, "path", "no such file")
        body, media_type = found
        return Response(body, media_type=media_type, headers={"cache-control": "no-cache"})

    async def guarded(
        request: Request, what: str, action: Callable[[], Awaitable[Response]]
    ) -> Response:
        denied = check_token(request, worker.settings.auth_token)
        if denied is not None:
            return denied
        try:
            response = await action()
        except TRANSIENT_ERRORS as exc:
            logger.warning("dashboard: %s failed, Redis unreachable (%s)", what, exc)
            return error_response(503, "", redact_url(f"Redis is unreachable, try again ({exc})"))
        if response.status_code < 400:
            logger.info("dashboard: %s (requested from %s)", what, _client(request))
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
        middleware=[Middleware(SecurityHeaders)],
    )
