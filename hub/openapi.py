"""The OpenAPI 3.1 document (/openapi.json) and a self-contained docs page (/docs).

Request schemas come from the same msgspec models that validate requests
(`msgspec.json.schema_components`), so the document cannot drift from what the hub
accepts. The operation table below is checked against the app's routes by a test, so a new
route without documentation fails the build. The docs page is rendered on the server with
no JavaScript and no CDN: it works offline and behind strict proxies.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from hub.http_helpers import json_response
from hub.request_models import BatchRequest, CancelRequest
from shared.job import JobRequest, JobStatus
from shared.pools import POOL_NAME
from shared.validation import whole
from shared.webhook import Webhook
from shared.worker_grants import Grant

Role = Literal["public", "client", "operator"]


class ErrorDetail(msgspec.Struct):
    field: str
    message: str


class Error(msgspec.Struct):
    """Every 4xx/5xx answer."""

    error: ErrorDetail


class JobView(msgspec.Struct, kw_only=True):
    """A job as the API shows it. Timestamps are ISO-8601 UTC; `queue_position` is the number
    of pending jobs ahead of it (pending jobs only); `waiting` explains a pending job's wait
    (GET /jobs/{id} only; `waiting.held` names a scheduling policy holding it back, with its
    bound); `held_*` are that policy's record on the job; list and submit answers omit
    `payload` and `result`."""

    id: str
    service_type: str
    customer_id: str | None
    priority: int
    effective_priority: int
    status: JobStatus
    progress: float
    message: str | None
    result: Any = None
    payload: Any = None
    error: str | None
    worker_id: str | None
    attempts: int
    max_retries: int
    timeout_seconds: float | None
    deadline: str | None
    tags: list[str]
    created_at: str
    claimed_at: str | None
    finished_at: str | None
    retry_at: str | None
    event_seq: int
    queue_position: int | None = None
    waiting: dict[str, Any] | None = None
    webhook: Webhook | None = None
    # requirements.models, else the models its payload names: a preference for a worker
    # that has them warm, never a requirement (README, Warm models).
    preferred_models: list[str] = []
    held_by: str | None = None
    held_at: str | None = None
    held_since: str | None = None
    held_until: str | None = None


class JobList(msgspec.Struct):
    jobs: list[JobView]
    next_cursor: str | None


# (method, path, summary, role, request model, success status, success model)
OPERATIONS: tuple[tuple[str, str, str, Role, type | None, str, type | None], ...] = (
    ("POST", "/jobs", "Submit a job (201 new, 200 existing id / Idempotency-Key)",
     "client", JobRequest, "201", JobView),
    ("GET", "/jobs", "List jobs: status, service_type, customer_id, pool, limit, cursor",
     "client", None, "200", JobList),
    ("POST", "/jobs/batch", "Submit up to 1000 jobs, all validated before any is written",
     "client", BatchRequest, "201", None),
    ("GET", "/jobs/{job_id}", "A job; pending: queue position and why it waits; ?wait=S",
     "client", None, "200", JobView),
    ("POST", "/jobs/{job_id}/cancel", "Cancel a pending or active job",
     "client", CancelRequest, "200", None),
    ("POST", "/jobs/{job_id}/retry", "Send a failed job back to the queue",
     "operator", None, "200", JobView),
    ("GET", "/jobs/{job_id}/events", "The job's events as Server-Sent Events (?token= allowed)",
     "client", None, "200", None),
    ("POST", "/api/jobs", "Original emp-redis submit (job_type, payload, priority 0-10, job_id, "
     "wait, timeout; ?token= allowed): docs/PROTOCOL-LEGACY.md", "client", None, "200", None),
    ("GET", "/api/jobs/{job_id}", "Original emp-redis job status (?token= allowed)",
     "client", None, "200", None),
    ("GET", "/workers", "Live workers", "operator", None, "200", None),
    ("GET", "/workers/{worker_id}", "One worker, live or offline", "operator", None, "200", None),
    ("POST", "/workers/{worker_id}/pause", "Stop a worker claiming", "operator", None, "200", None),
    ("POST", "/workers/{worker_id}/resume", "Let a worker claim again",
     "operator", None, "200", None),
    ("POST", "/workers/{worker_id}/drain", "Finish running jobs, claim no more",
     "operator", None, "200", None),
    ("GET", "/stats", "Queue, throughput, timings and workers: sums, and per pool in `pools`",
     "operator", None, "200", None),
    ("GET", "/health", "The process is up", "public", None, "200", None),
    ("GET", "/ready", "Redis and the event stream are reachable", "public", None, "200", None),
    ("GET", "/metrics", "Prometheus metrics", "operator", None, "200", None),
    ("GET", "/openapi.json", "This document", "public", None, "200", None),
    ("GET", "/docs", "Human-readable API documentation", "public", None, "200", None),
    ("GET", "/", "Operator dashboard (HTML)", "public", None, "200", None),
    ("GET", "/ui/jobs/{job_id}", "Job detail page (HTML)", "public", None, "200", None),
    ("GET", "/dashboard/data", "Everything the dashboard shows, in one document",
     "operator", None, "200", None),
    ("GET", "/dashboard/series", "The dashboard's charts: the last hour, per minute",
     "operator", None, "200", None),
    ("GET", "/dashboard/jobs/{job_id}/timeline", "A job's events, read back from the stream",
     "operator", None, "200", None),
    ("POST", "/gateway/grants", "Issue a gateway worker's token (shown once) and its grant",
     "operator", Grant, "201", None),
    ("GET", "/gateway/grants", "Every gateway grant (never a token)",
     "operator", None, "200", None),
    ("POST", "/gateway/grants/{worker_id}/revoke", "Revoke a gateway token; cut the worker off",
     "operator", None, "204", None),
    ("GET", "/webhooks/deliveries",
     "Webhook deliveries dead-lettered (status=failed) or being retried (status=retrying)",
     "operator", None, "200", None),
    ("POST", "/webhooks/deliveries/{delivery_id}/redeliver",
     "Send a dead-lettered webhook delivery again (same webhook-id and body)",
     "operator", None, "200", None),
)  # fmt: skip

# Reads over pools (shared/pools.py): every pool the hub serves, or the one `?pool=` names.
POOL_PARAMETER: dict[str, Any] = {
    "name": "pool",
    "in": "query",
    "required": False,
    "description": "Only this pool (one the hub serves, its POOLS; any other is a 400 "
    "naming `pool`); absent: every pool the hub serves, merged",
    "schema": {"type": "string", "pattern": whole(POOL_NAME.pattern)},
}
POOL_READS = frozenset(
    {"/jobs", "/stats", "/metrics", "/workers", "/dashboard/data", "/dashboard/series"}
)
# Submissions (JobRequest.pool) and ids: documented once, in the document's description.
POOLS_TEXT = (
    "Pools: a job goes to the pool its submission names (`pool`), else to the one the hub's "
    "HUB_POOL_RULES pick, else to the hub's default pool; its id then starts with its pool "
    "(`gpu-eu!job-...`; the default pool's ids carry none), and every route that takes an "
    "id finds the job in that pool (an id naming a pool the hub does not serve is a 404). "
    "Listings, /stats, /metrics and the dashboard feeds cover every pool, or one with "
    "`?pool=`; GET /jobs merges the pools' pages in one order, its cursor holding each "
    "pool's offset."
)

WEBSOCKETS = (
    ("/ws", "Live events: subscribe to a job, a customer or everything (operator)"),
    ("/ws/client/{client_id}", "Original emp-redis client protocol (submit_job, ...)"),
    ("/ws/monitor/{monitor_id}", "Original emp-redis monitor protocol (stats_broadcast, ...)"),
    ("/gateway/worker", "Worker gateway: untrusted workers, gateway tokens only"),
)

_STATUS_TEXT = {"200": "OK", "201": "Created", "204": "No Content"}
_ERRORS = {
    "400": "Invalid input (names the field)",
    "401": "Missing or invalid token",
    "403": "Token lacks the role",
    "404": "Not found",
    "409": "Conflict with the job's state",
    "413": "Body over the size limit",
    "429": "The token's rate limit (HUB_RATE_LIMIT_PER_SECOND): retry after Retry-After seconds",
}


@cache
def build_document() -> dict[str, Any]:
    models = [JobRequest, BatchRequest, CancelRequest, Grant, JobView, JobList, Error]
    refs, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    ref: dict[Any, dict[str, Any]] = dict(zip(models, refs, strict=True))
    error_content = {"application/json": {"schema": ref[Error]}}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, role, body, ok, ok_model in OPERATIONS:
        op: dict[str, Any] = {"summary": summary, "x-role": role}
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        parameters: list[dict[str, Any]] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
        if method == "GET" and path in POOL_READS:
            parameters.append(POOL_PARAMETER)
        if parameters:
            op["parameters"] = parameters
        if body is not None:
            op["requestBody"] = {
                "required": body is not CancelRequest,
                "content": {"application/json": {"schema": ref[body]}},
            }
        success: dict[str, Any] = {"description": _STATUS_TEXT.get(ok, "OK")}
        if ok_model is not None:
            success["content"] = {"application/json": {"schema": ref[ok_model]}}
        responses: dict[str, Any] = {ok: success}
        if role != "public":
            op["security"] = [{"bearer": []}]
            for code, text in _ERRORS.items():
                responses[code] = {"description": text, "content": error_content}
        op["responses"] = responses
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "emp-redis hub",
            "version": "0.1.0",
            "description": "Job submission, live events and fleet monitoring. WebSockets: "
            + "; ".join(f"{p} ({d})" for p, d in WEBSOCKETS)
            + ". "
            + POOLS_TEXT,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


async def openapi_json(request: Request) -> Response:
    return json_response(build_document())


async def docs(request: Request) -> Response:
    document = build_document()
    schemas = {
        name: orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode()
        for name, schema in document["components"]["schemas"].items()
    }
    response = _templates.TemplateResponse(
        request,
        "docs.html",
        {"operations": OPERATIONS, "websockets": WEBSOCKETS, "schemas": schemas},
    )
    assert isinstance(response, HTMLResponse)
    return response


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
