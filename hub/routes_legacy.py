"""The original emp-redis REST routes, as aliases over the broker (docs/PROTOCOL-LEGACY.md,
"REST routes"): `POST /api/jobs` (with its synchronous `wait`) and `GET /api/jobs/{id}`.

They take the legacy WebSocket's auth rules: a client or operator token, as
`Authorization: Bearer` or `?token=` (the original page builds URLs, not headers), and
HUB_LEGACY_SHARED_TOKEN changes nothing here since every route is a client's. Answers and
errors keep the original's (FastAPI's) shapes: `{"detail": "..."}` with the field named in
`field` when one is at fault, which the original page shows.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.auth import Principal
from hub.context import HubContext, hub_of
from hub.errors import ApiError
from hub.events import until_finished
from hub.http_helpers import json_response, read_body
from hub.legacy_ids import unescape
from hub.legacy_messages import legacy_client_id, legacy_status
from hub.legacy_submit import effective_priority, legacy_request, visible_legacy_id
from hub.pool_routing import route
from hub.priority import refuse_past_deadline
from shared.errors import InvalidInput, PayloadTooLarge
from shared.job import Job

# The original's JobSubmitRequest fields; anything else is refused naming it.
SUBMIT_FIELDS = frozenset({"job_type", "payload", "priority", "job_id", "wait", "timeout"})
DEFAULT_TIMEOUT = 300  # the original's `timeout` default, in seconds


def _detail(status: int, detail: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if field:
        body["field"] = field
    return json_response(body, status)


def _principal(request: Request) -> Principal | None:
    principal = request.scope.get("auth")
    return principal if isinstance(principal, Principal) else None


def _seconds_text(ms: int | None) -> str | None:
    # The original stored times as str(time.time()) and its model types them `str`.
    return None if ms is None else f"{ms / 1000:.3f}"


async def job_status_response(hub: HubContext, job: Job) -> dict[str, Any]:
    """The original's JobStatusResponse for `job`."""
    position = None
    if job.status == "pending":
        position = await hub.for_job(job.id).queue_position(job.id)
    display = position + 1 if position is not None else None
    description = None
    if display is not None:
        description = (
            "Next in queue"
            if display == 1
            else f"{display - 1} job{'s' if display > 2 else ''} ahead in queue"
        )
    return {
        "job_id": unescape(job.id),
        "status": legacy_status(job.status),
        "job_type": job.service_type,
        "client_id": legacy_client_id(job),
        "worker_id": job.worker_id,
        "created_at": _seconds_text(job.created_at),
        "claimed_at": _seconds_text(job.claimed_at),
        "completed_at": _seconds_text(job.finished_at),
        "position": position,
        "display_position": display,
        "progress": float(job.progress),
        "result": job.result,
        "error": job.error,
        "position_description": description,
        "payload": job.payload,
        "failures": job.attempts,
    }


async def _read_submission(request: Request, hub: HubContext) -> dict[str, Any]:
    body = await read_body(
        request, hub.settings.max_request_bytes, hub.settings.body_timeout_seconds
    )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("body", "not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body", "expected a JSON object")
    unknown = sorted(set(doc) - SUBMIT_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], "unknown field")
    if not isinstance(doc.get("job_type"), str):
        raise InvalidInput("job_type", "required, a string")
    if not isinstance(doc.get("payload"), dict):
        raise InvalidInput("payload", "required, a JSON object")
    if not isinstance(doc.get("wait", False), bool):
        raise InvalidInput("wait", "must be true or false")
    timeout = doc.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInput("timeout", "must be a whole number of seconds, 0 or more")
    return doc


async def submit_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = _principal(request)
    if principal is None:
        return _detail(401, "Authentication failed: Invalid token")
    try:
        doc = await _read_submission(request, hub)
        req = legacy_request(
            hub, principal, doc, client_id=None, id_field="job_id", id_prefix="job-rest"
        )
        broker = hub.pools.brokers[route(req, hub.settings.pool_rules, hub.pools.names, "")]
        now = int(time.time() * 1000)
        refuse_past_deadline(req, now)
        submitted = await broker.submit(
            req,
            effective_priority=effective_priority(hub, principal, req, now),
            max_priority=principal.max_priority,
        )
    except PayloadTooLarge as exc:
        return _detail(413, f"Invalid {exc.field}: {exc.message}", exc.field)
    except InvalidInput as exc:
        return _detail(422, f"Invalid {exc.field}: {exc.message}", exc.field)
    except ApiError as exc:
        return _detail(exc.status, f"Invalid {exc.field}: {exc.message}", exc.field)
    job = await broker.get(submitted.job_id)
    if job is None or not principal.can_see(job.customer_id):
        return _detail(409, f"Job id {doc.get('job_id')} already in use", "job_id")
    shown = unescape(job.id)
    if not doc.get("wait", False):
        return json_response(
            {
                "success": True,
                "job_id": shown,
                "message": f"Job submitted successfully with ID: {shown}",
            }
        )
    timeout = min(float(doc.get("timeout", DEFAULT_TIMEOUT)), hub.settings.max_wait_seconds)
    if not job.status.terminal and timeout > 0:
        broker = hub.for_job(job.id)
        job = await until_finished(hub.events, broker, job.id, timeout, hub.shutdown) or job
    out = await job_status_response(hub, job)
    if not job.status.terminal:
        out["error"] = f"Timeout: Job did not complete within {timeout:g} seconds"
    return json_response(out)


async def get_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = _principal(request)
    if principal is None:
        return _detail(401, "Authentication failed: Invalid token")
    asked = request.path_params["job_id"]
    try:
        stored = await visible_legacy_id(hub, principal, asked)
    except InvalidInput:
        stored = None  # an id no job can have (too long even escaped)
    job = await hub.for_job(stored).get(stored) if stored is not None else None
    if job is None:
        return _detail(404, f"Job with ID {asked} not found")
    return json_response(await job_status_response(hub, job))


routes = [
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
]
