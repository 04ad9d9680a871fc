"""Every REST request the SDK makes, described once for both clients.

A `Call` says what to send, whether it is safe to send twice, and how to read the answer.
`Client` and `AsyncClient` only carry calls out (emp/client.py, emp/async_client.py), so
the two cannot drift apart in what they send or how they read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from emp._fields import Fields, as_object
from emp.errors import ApiError, Conflict, HubUnreachable, ProtocolError, api_error
from emp.fleet import Stats, Worker
from emp.models import Job, JobPage, JobRequest
from emp.retry import NOT_SENT

T = TypeVar("T")

MAX_BATCH = 1000  # POST /jobs/batch takes at most this many jobs


@dataclass(frozen=True, slots=True)
class Submitted:
    """A submission's answer: the job, and whether this request created it (False: the
    hub already had a job under that id or Idempotency-Key, possibly from an earlier try
    of the same call whose answer was lost)."""

    job: Job
    created: bool


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: Literal["GET", "POST"]
    path: str
    read: Callable[[Any, int], T]  # (decoded JSON body, HTTP status) -> result
    params: Mapping[str, str] | None = None
    body: Any = None  # JSON; None sends no body
    headers: Mapping[str, str] | None = None
    idempotent: bool = False  # safe to send again once it may have reached the hub
    wait: float = 0.0  # the hub may hold the answer this long (long-polls)


def _job_path(job_id: str, action: str = "") -> str:
    # Job ids never contain '/', but a typo must hit a 404, not another route.
    return f"/jobs/{quote(job_id, safe='')}" + (f"/{action}" if action else "")


def submit(request: JobRequest, idempotency_key: str) -> Call[Submitted]:
    return Call(
        "POST",
        "/jobs",
        lambda body, status: Submitted(Job.from_json(body), status == 201),
        body=request.to_json(),
        headers={"Idempotency-Key": idempotency_key},
        idempotent=True,
    )


def submit_batch(requests: Sequence[JobRequest]) -> Call[list[Submitted]]:
    """Idempotent because every request carries an id (the clients see to that)."""
    assert all(r.id is not None for r in requests), "batch submissions need ids"
    return Call(
        "POST",
        "/jobs/batch",
        lambda body, _status: _batch_answer(body),
        body={"jobs": [r.to_json() for r in requests]},
        idempotent=True,
    )


def _batch_answer(body: Any) -> list[Submitted]:
    out: list[Submitted] = []
    for i, entry in enumerate(Fields(body, "batch").items("jobs")):
        f = Fields(entry, f"jobs[{i}]")
        problem = f.raw.get("error")
        if isinstance(problem, Mapping):  # the id belongs to another customer's job
            why = Fields(problem, f"jobs[{i}].error")
            raise Conflict(409, f"jobs[{i}].{why.text('field')}", why.text("message"))
        out.append(Submitted(Job.from_json(entry), f.flag("created")))
    return out


def get_job(job_id: str, wait: float = 0.0) -> Call[Job]:
    params = {"wait": f"{wait:g}"} if wait > 0 else None
    return Call("GET", _job_path(job_id), _job, params=params, idempotent=True, wait=wait)


def list_jobs(
    *,
    status: str | None,
    service_type: str | None,
    customer_id: str | None,
    limit: int,
    cursor: str | None,
    pool: str | None = None,
) -> Call[JobPage]:
    given = {
        "status": status,
        "service_type": service_type,
        "customer_id": customer_id,
        "pool": pool,
        "limit": str(limit),
        "cursor": cursor,
    }
    params = {k: v for k, v in given.items() if v is not None}
    return Call("GET", "/jobs", lambda body, _status: _page(body), params=params, idempotent=True)


def _page(body: Any) -> JobPage:
    f = Fields(body, "job list")
    return JobPage([Job.from_json(j) for j in f.items("jobs")], f.opt_text("next_cursor"))


def cancel(job_id: str, reason: str | None) -> Call[Job]:
    return Call(
        "POST",
        _job_path(job_id, "cancel"),
        lambda body, _status: Job.from_json(Fields(body, "cancel").obj("job")),
        body={"reason": reason} if reason is not None else {},
    )


def retry(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id, "retry"), _job, body={})


def workers(pool: str | None = None) -> Call[list[Worker]]:
    return Call(
        "GET",
        "/workers",
        lambda body, _status: [
            Worker.from_json(w) for w in Fields(body, "workers").items("workers")
        ],
        params={"pool": pool} if pool is not None else None,
        idempotent=True,
    )


def stats(pool: str | None = None) -> Call[Stats]:
    return Call(
        "GET",
        "/stats",
        lambda body, _status: Stats.from_json(body),
        params={"pool": pool} if pool is not None else None,
        idempotent=True,
    )


def _job(body: Any, _status: int) -> Job:
    return Job.from_json(body)


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result from a final response, or the ApiError the hub answered."""
    if response.status_code >= 400:
        raise error_of(response)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError(
            f"{call.method} {call.path}: HTTP {response.status_code} with a body that is "
            "not JSON (a proxy in front of the hub?)"
        ) from None
    return call.read(body, response.status_code)


def error_of(response: httpx.Response) -> ApiError:
    """The hub's `{"error": {"field", "message"}}`, or the start of whatever else came (a
    proxy's error page) as the message."""
    try:
        detail = Fields(as_object(response.json(), "error answer").get("error"), "error")
        return api_error(response.status_code, detail.text("field"), detail.text("message"))
    except (json.JSONDecodeError, UnicodeDecodeError, ProtocolError):
        text = response.text.strip()[:200] or response.reason_phrase
        return api_error(response.status_code, "", text)


def unreachable(url: str, call: Call[Any], error: Exception, tries: int) -> HubUnreachable:
    """The error for a call that got no answer; it says when the hub may have acted."""
    what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    message = f"{call.method} {call.path}: no answer from {url} after {tries} tries ({what})"
    if not call.idempotent and not isinstance(error, NOT_SENT):
        message += "; the hub may have carried it out"
    return HubUnreachable(message)
