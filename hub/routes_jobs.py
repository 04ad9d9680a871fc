"""REST routes for jobs: submit (one or a batch), read, list, long-poll, cancel, retry.

Every state change goes through the Broker API (one Lua script each); reads go through its
read model (`Broker.reads`). A client token bound to a customer submits only as that
customer and never learns that another customer's job exists (404, not 403).

Pools (shared/pools.py): a submission goes to the pool it names, else the one
HUB_POOL_RULES picks, else the hub's default (hub/pool_routing.py); the job's id then
carries its pool, so every route that takes an id goes straight to that pool's Broker
(`HubContext.for_job`). Listings cover every pool, or one with `?pool=`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.auth import Principal
from hub.context import HubContext, hub_of, principal_of, require_operator
from hub.errors import ApiError, not_found
from hub.events import until_finished
from hub.fleet import why_waiting
from hub.http_helpers import decode_model, json_response, read_body
from hub.job_access import visible_id
from hub.output_urls import refresh_urls
from hub.pool_routing import route
from hub.priority import deadline_ms, refuse_past_deadline
from hub.queries import STATUSES, JobFilter, created_view, list_jobs, summary_with_position
from hub.request_models import BatchRequest, CancelRequest
from hub.sse import job_events
from hub.webhooks.subscribe import check_subscription
from shared.broker import Broker, Submitted
from shared.errors import InvalidInput
from shared.job import Job, JobRequest, scoped_job_id
from shared.logs import job_id_var
from shared.validation import CustomerId, ServiceType, check_document, normalise_service

MAX_LIST_LIMIT = 500

_service_check = msgspec.json.Decoder(ServiceType)
_customer_check = msgspec.json.Decoder(CustomerId)


T = TypeVar("T")


def _decode(body: bytes, model: type[T]) -> T:
    """Parse a submission straight from bytes. A customer-bound token's customer is filled
    in afterwards (_prepare), so every token kind gets the same parser and the same answers."""
    return decode_model(body, model)


def _prepare(hub: HubContext, principal: Principal, req: JobRequest, field: str) -> JobRequest:
    """Apply the caller's customer binding (its customer, its space of ids) and the hub's
    default priority."""
    changes: dict[str, Any] = {}
    if principal.customer_id is not None:
        if req.customer_id not in (None, principal.customer_id):
            raise ApiError(
                403, f"{field}customer_id", "this token may only submit for its customer"
            )
        changes["customer_id"] = principal.customer_id
        if req.id is not None:  # the customer's own space of ids (hub/job_access.py)
            changes["id"] = scoped_job_id(principal.customer_id, req.id)
    if req.priority is None:
        changes["priority"] = hub.settings.default_priority
    prepared = msgspec.structs.replace(req, **changes) if changes else req
    try:
        prepared.check_customer()
    except InvalidInput as exc:
        raise InvalidInput(f"{field}{exc.field}", exc.message) from None
    if prepared.webhook is not None:
        check_subscription(hub.settings.webhooks, prepared.webhook, field)
    return prepared


def _pool(hub: HubContext, req: JobRequest, field: str) -> Broker:
    """The Broker of the pool `req` goes to (400 naming `{field}pool` for one this hub
    does not serve): checked before anything is written."""
    return hub.pools.brokers[route(req, hub.settings.pool_rules, hub.pools.names, field)]


def _effective(hub: HubContext, principal: Principal, req: JobRequest, now_ms: int) -> int:
    return hub.settings.priority.effective(
        req.priority if req.priority is not None else hub.settings.default_priority,
        req.customer_id,
        deadline_ms=deadline_ms(req),
        created_ms=now_ms,
        now_ms=now_ms,
        ceiling=principal.max_priority,
    )


def _idempotency_key(request: Request, req: JobRequest) -> str | None:
    """Scope the client's key by customer: two customers' "order-1" are different jobs."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > 256 or not key.isprintable():
        raise InvalidInput("Idempotency-Key", "must be 1-256 printable characters")
    return hashlib.sha256(f"{req.customer_id or ''}\x00{key}".encode()).hexdigest()


async def submit_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = principal_of(request)
    try:
        body = await read_body(
            request, hub.settings.max_request_bytes, hub.settings.body_timeout_seconds
        )
        req = _prepare(hub, principal, _decode(body, JobRequest), "")
        broker = _pool(hub, req, "")
        now_ms = int(time.time() * 1000)
        refuse_past_deadline(req, now_ms)
        idem = _idempotency_key(request, req)
        effective = _effective(hub, principal, req, now_ms)
        submitted = await broker.submit(
            req,
            effective_priority=effective,
            idempotency_key=idem,
            max_priority=principal.max_priority,
        )
    except (InvalidInput, ApiError):
        hub.metrics.rejected.inc()
        raise
    job_id = submitted.job_id
    job_id_var.set(job_id)
    headers = {"Location": f"/jobs/{job_id}"}
    if submitted.created:
        hub.metrics.created.inc()
        view = created_view(req, submitted, effective, broker.settings)
        return json_response(view, 201, headers)
    job = await summary_with_position(broker.reads.jobs, job_id)
    if job is None:  # finished and expired between the two calls: extremely unlikely
        job = {"id": job_id}
    elif not principal.can_see(job.get("customer_id")):
        raise ApiError(409, "id", "id already in use")
    hub.metrics.duplicate.inc()
    return json_response(job, 200, headers)


async def submit_batch(request: Request) -> Response:
    hub = hub_of(request)
    principal = principal_of(request)
    try:
        body = await read_body(
            request, hub.settings.max_request_bytes, hub.settings.body_timeout_seconds
        )
        batch = _decode(body, BatchRequest)
        reqs = [_prepare(hub, principal, r, f"jobs[{i}].") for i, r in enumerate(batch.jobs)]
        brokers = [_pool(hub, r, f"jobs[{i}].") for i, r in enumerate(reqs)]
        limit = hub.broker.settings.max_payload_bytes
        for i, r in enumerate(reqs):  # name the failing job; the broker checks again
            check_document(r.payload, f"jobs[{i}].payload", max_bytes=limit)
        now_ms = int(time.time() * 1000)
        for i, r in enumerate(reqs):
            refuse_past_deadline(r, now_ms, f"jobs[{i}].")
        effective = [_effective(hub, principal, r, now_ms) for r in reqs]
        # One submit_many per pool (each pool's scripts touch only its keys), each keeping
        # its jobs' order; the answer keeps the request's.
        by_pool: dict[str, list[int]] = {}
        for i, broker in enumerate(brokers):
            by_pool.setdefault(broker.pool, []).append(i)
        answers: dict[int, Submitted] = {}
        for pool, indexes in by_pool.items():
            submitted = await hub.pools.brokers[pool].submit_many(
                [reqs[i] for i in indexes],
                effective_priorities=[effective[i] for i in indexes],
                max_priority=principal.max_priority,
            )
            answers.update(zip(indexes, submitted, strict=True))
        results = [answers[i] for i in range(len(reqs))]
    except (InvalidInput, ApiError):
        hub.metrics.rejected.inc()
        raise
    out = await _batch_view(hub, principal, results)
    created = sum(1 for r in results if r.created)
    hub.metrics.created.inc(created)
    hub.metrics.duplicate.inc(len(results) - created)
    return json_response({"jobs": out}, 201 if created else 200)


async def _batch_view(
    hub: HubContext, principal: Principal, results: list[Submitted]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in results:
        view = await summary_with_position(hub.for_job(r.job_id).reads.jobs, r.job_id) or {
            "id": r.job_id
        }
        if not principal.can_see(view.get("customer_id")):
            view = {"id": r.job_id, "error": {"field": "id", "message": "id already in use"}}
        view["created"] = r.created
        out.append(view)
    return out


async def visible_stored_id(hub: HubContext, principal: Principal, job_id: str) -> str:
    """The stored id of a job the caller may see (hub/job_access.py), else 404."""
    stored = await visible_id(hub.pools, principal, job_id)
    job_id_var.set(stored or job_id)  # every log line of this request names the job
    if stored is None:
        raise not_found()
    return stored


async def visible_job(hub: HubContext, principal: Principal, job_id: str) -> Job:
    """The job, loaded only once the caller is known to be allowed to see it."""
    stored = await visible_stored_id(hub, principal, job_id)
    job = await hub.for_job(stored).get(stored)
    if job is None:  # expired between the two reads
        raise not_found()
    return job


def _wait_param(request: Request, cap: float) -> float:
    text = request.query_params.get("wait")
    if text is None or text == "":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput("wait", "expected a number of seconds") from None
    if not 0 <= value <= cap:
        raise InvalidInput("wait", f"must be between 0 and {cap:g} seconds")
    return value


async def job_view(hub: HubContext, job: Job) -> dict[str, Any]:
    """The full job; for a pending job its queue position in its pool and why it waits
    (judged by the workers of its pool: only they can claim it)."""
    out = job.to_public()
    if out.get("result") is not None:
        out["result"] = refresh_urls(out["result"], hub.output_signer, dt.datetime.now(dt.UTC))
    out["queue_position"] = None
    if job.status == "pending":
        broker = hub.for_job(job.id)
        position = await broker.queue_position(job.id)
        workers = await hub.workers(broker.pool)
        now = await broker.reads.now_ms()
        out["queue_position"] = position
        out["waiting"] = why_waiting(job, workers, position, now)
    return out


async def get_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = principal_of(request)
    job_id = request.path_params["job_id"]
    wait = _wait_param(request, hub.settings.max_wait_seconds)
    job = await visible_job(hub, principal, job_id)
    if wait > 0 and not job.status.terminal:
        job = (
            await until_finished(hub.events, hub.for_job(job.id), job.id, wait, hub.shutdown) or job
        )
    return json_response(await job_view(hub, job))


def _list_params(request: Request, principal: Principal) -> tuple[JobFilter, int, str | None]:
    q = request.query_params
    unknown = set(q.keys()) - {"status", "service_type", "customer_id", "limit", "cursor", "pool"}
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput("status", f"expected one of {', '.join(STATUSES)}")
    service = normalise_service(q["service_type"]) if q.get("service_type") else None
    customer = q.get("customer_id") or None
    try:
        if service is not None:
            _service_check.decode(msgspec.json.encode(service))
        if customer is not None:
            _customer_check.decode(msgspec.json.encode(customer))
    except msgspec.ValidationError as exc:
        raise InvalidInput("service_type" if service else "customer_id", str(exc)) from None
    if principal.customer_id is not None:
        if customer not in (None, principal.customer_id):
            raise ApiError(403, "customer_id", "this token may only read its customer's jobs")
        customer = principal.customer_id
    try:
        limit = int(q.get("limit") or 50)
    except ValueError:
        raise InvalidInput("limit", "expected an integer") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput("limit", f"must be between 1 and {MAX_LIST_LIMIT}")
    return JobFilter(status, service, customer), limit, q.get("cursor") or None


async def get_jobs(request: Request) -> Response:
    hub = hub_of(request)
    flt, limit, cursor = _list_params(request, principal_of(request))
    pools = {b.pool: b.reads.jobs for b in hub.selected(request.query_params.get("pool"))}
    budget = max(limit * 20, 2000)
    jobs, nxt = await list_jobs(pools, flt, limit=limit, cursor=cursor, budget=budget)
    return json_response({"jobs": jobs, "next_cursor": nxt})


async def _optional_body(request: Request, hub: HubContext) -> bytes:
    body = await read_body(request, 64 * 1024, hub.settings.body_timeout_seconds)
    return body if body.strip() else b"{}"


async def cancel_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = principal_of(request)
    job_id = request.path_params["job_id"]
    reason = decode_model(await _optional_body(request, hub), CancelRequest).reason
    stored = await visible_stored_id(hub, principal, job_id)
    result = await hub.for_job(stored).cancel(stored, reason)
    if result.outcome == "missing":
        raise not_found()
    if result.outcome == "unchanged":
        raise ApiError(409, "status", f"job is {result.was}; only pending or active jobs cancel")
    job = await visible_job(hub, principal, stored)
    return json_response({"job": await job_view(hub, job), "was": result.was})


async def retry_job(request: Request) -> Response:
    hub = hub_of(request)
    principal = require_operator(request)
    job_id = request.path_params["job_id"]
    outcome = await hub.for_job(job_id).retry(job_id)
    if outcome == "missing":
        raise not_found()
    if outcome == "not_failed":
        job = await visible_job(hub, principal, job_id)
        raise ApiError(409, "status", f"job is {job.status}; only failed jobs can be retried")
    job = await visible_job(hub, principal, job_id)
    return json_response(await job_view(hub, job))


routes = [
    Route("/jobs", submit_job, methods=["POST"]),
    Route("/jobs", get_jobs, methods=["GET"]),
    Route("/jobs/batch", submit_batch, methods=["POST"]),
    Route("/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id}/retry", retry_job, methods=["POST"]),
    Route("/jobs/{job_id}/events", job_events, methods=["GET"]),
]
