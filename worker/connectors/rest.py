"""Generic HTTP connectors, configured entirely by environment so a service needs no code.

RestSyncConnector: one request per job, the response is the result.
RestAsyncConnector: submit, poll a status ({"status": queued|processing|completed|failed,
  "progress"? (0-100), "message"?, "error"?}), fetch the result.
Their settings are the REST_SYNC and REST_ASYNC sections below (listed in
release/.env.worker.example). Paths may contain `{id}`; without it the remote id is appended
as a last path segment.

Both send `{"job_id": <broker job id>, **payload}`. Failures: 4xx -> not retryable (the
service refused this payload); 5xx, 408, 429 and connection errors -> retryable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

import httpx

from shared.setting import choice, number, optional_text
from shared.setting_section import Section
from worker.connectors.base import (
    Connector,
    Health,
    JobCancelled,
    JobContext,
    JobFailed,
    ProgressFn,
)
from worker.connectors.httpcommon import (
    HttpService,
    auth_headers,
    body_excerpt,
    response_json,
    status_failure,
)
from worker.connectors.setting_kinds import http_url, optional_path, path, service_name
from worker.connectors.util import until_cancelled, wait_cancelled

log = logging.getLogger(__name__)

PROBE_TIMEOUT: Final = 10.0
_DONE: Final = frozenset({"completed", "complete", "succeeded", "success", "done", "finished"})
_FAILED: Final = frozenset({"failed", "error", "errored"})
_CANCELLED: Final = frozenset({"cancelled", "canceled"})

REST_SYNC = Section("generic REST connector, one request per job (SERVICES=rest_sync)")
REST_SYNC_SERVICE = REST_SYNC.add(
    service_name("REST_SYNC_SERVICE", "rest_sync", doc="Service name it registers as")
)
REST_SYNC_BASE_URL = REST_SYNC.add(
    http_url("REST_SYNC_BASE_URL", "http://127.0.0.1:8000", doc="The service's address")
)
REST_SYNC_PATH = REST_SYNC.add(
    path(
        "REST_SYNC_PATH",
        "/api/process",
        doc="Path of the request; the response body is the job's result",
    )
)
REST_SYNC_METHOD = REST_SYNC.add(
    choice(
        "REST_SYNC_METHOD", "post", ("get", "post", "put", "patch"), doc="get, post, put or patch"
    )
)
REST_SYNC_HEALTH_PATH = REST_SYNC.add(
    optional_path("REST_SYNC_HEALTH_PATH", doc="Path probed for health; empty: no probe")
)
REST_SYNC_TIMEOUT_SECONDS = REST_SYNC.add(
    number("REST_SYNC_TIMEOUT_SECONDS", 300.0, lo=0.1, doc="Limit for one request")
)
REST_SYNC_AUTH_HEADER = REST_SYNC.add(
    optional_text(
        "REST_SYNC_AUTH_HEADER", doc="Whole Authorization header value; empty: none", secret=True
    )
)

REST_ASYNC = Section("generic REST connector, submit then poll (SERVICES=rest_async)")
REST_ASYNC_SERVICE = REST_ASYNC.add(
    service_name("REST_ASYNC_SERVICE", "rest_async", doc="Service name it registers as")
)
REST_ASYNC_BASE_URL = REST_ASYNC.add(
    http_url("REST_ASYNC_BASE_URL", "http://127.0.0.1:8000", doc="The service's address")
)
REST_ASYNC_SUBMIT_PATH = REST_ASYNC.add(
    path("REST_ASYNC_SUBMIT_PATH", "/api/submit", doc='Submit path; answers {"id"} or {"job_id"}')
)
REST_ASYNC_STATUS_PATH = REST_ASYNC.add(
    path(
        "REST_ASYNC_STATUS_PATH",
        "/api/status/{id}",
        doc='Status path ({id}: the remote id); answers {"status", "progress"?, "message"?, '
        '"error"?}',
    )
)
REST_ASYNC_RESULT_PATH = REST_ASYNC.add(
    path("REST_ASYNC_RESULT_PATH", "/api/result/{id}", doc="Result path")
)
REST_ASYNC_CANCEL_PATH = REST_ASYNC.add(
    optional_path("REST_ASYNC_CANCEL_PATH", doc="Cancel path; empty: no remote cancel")
)
REST_ASYNC_HEALTH_PATH = REST_ASYNC.add(
    optional_path("REST_ASYNC_HEALTH_PATH", doc="Path probed for health; empty: no probe")
)
REST_ASYNC_POLL_SECONDS = REST_ASYNC.add(
    number("REST_ASYNC_POLL_SECONDS", 1.0, lo=0.001, doc="Status polling interval")
)
REST_ASYNC_TIMEOUT_SECONDS = REST_ASYNC.add(
    number("REST_ASYNC_TIMEOUT_SECONDS", 3600.0, lo=0.1, doc="Limit for the whole remote job")
)
REST_ASYNC_AUTH_HEADER = REST_ASYNC.add(
    optional_text(
        "REST_ASYNC_AUTH_HEADER", doc="Whole Authorization header value; empty: none", secret=True
    )
)


def _body(job: JobContext) -> dict[str, Any]:
    return {"job_id": job.job_id, **job.payload}


def _json_result(response: httpx.Response) -> Any:
    body = response_json(response)
    if body is not None:
        return body
    return {"text": body_excerpt(response), "content_type": response.headers.get("content-type")}


async def _probe(http: HttpService, path: str | None) -> Health:
    if path is None:
        return Health(ok=True, detail="no health path configured")
    try:
        response = await http.request("GET", path, request_timeout=PROBE_TIMEOUT)
    except JobFailed as exc:
        return Health(ok=False, detail=exc.message)
    if response.is_success:
        body = response_json(response)
        return Health(ok=True, detail=f"{path} answered {response.status_code}", info=_info(body))
    return Health(ok=False, detail=f"{path} answered {response.status_code}")


def _info(body: Any) -> dict[str, Any]:
    return dict(body) if isinstance(body, Mapping) and len(body) <= 32 else {}


class RestSyncConnector(Connector):
    name = "rest_sync"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = env or {}
        self.name = REST_SYNC_SERVICE.read(values)
        base_url = REST_SYNC_BASE_URL.read(values)
        self.path = REST_SYNC_PATH.read(values)
        self.method = REST_SYNC_METHOD.read(values).upper()
        self.health_path = REST_SYNC_HEALTH_PATH.read(values)
        timeout = REST_SYNC_TIMEOUT_SECONDS.read(values)
        headers = auth_headers(REST_SYNC_AUTH_HEADER.read(values))
        self.http = HttpService(self.name, base_url, timeout=timeout, headers=headers)

    async def health(self) -> Health:
        return await _probe(self.http, self.health_path)

    async def close(self) -> None:
        await self.http.aclose()

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        if cancel.is_set():
            raise JobCancelled("cancelled before the request was sent")
        body = _body(job)
        await progress(0.0, f"{self.method} {self.path}")
        if self.method == "GET":  # no body on GET: scalar fields travel as query parameters
            params = {k: v for k, v in body.items() if isinstance(v, str | int | float | bool)}
            request = self.http.request("GET", self.path, params=params)
        else:
            request = self.http.request(self.method, self.path, json_body=body)
        # Cancelling drops the connection: the only stop signal a synchronous API has.
        response = await until_cancelled(request, cancel)
        if not response.is_success:
            raise status_failure(self.name, response)
        return _json_result(response)


class RestAsyncConnector(Connector):
    name = "rest_async"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = env or {}
        self.name = REST_ASYNC_SERVICE.read(values)
        base_url = REST_ASYNC_BASE_URL.read(values)
        self.submit_path = REST_ASYNC_SUBMIT_PATH.read(values)
        self.status_path = REST_ASYNC_STATUS_PATH.read(values)
        self.result_path = REST_ASYNC_RESULT_PATH.read(values)
        self.cancel_path = REST_ASYNC_CANCEL_PATH.read(values)
        self.health_path = REST_ASYNC_HEALTH_PATH.read(values)
        self.poll_seconds = REST_ASYNC_POLL_SECONDS.read(values)
        self.timeout = REST_ASYNC_TIMEOUT_SECONDS.read(values)
        headers = auth_headers(REST_ASYNC_AUTH_HEADER.read(values))
        # Each call is short; REST_ASYNC_TIMEOUT_SECONDS bounds the remote job as a whole.
        request_timeout = min(60.0, self.timeout)
        self.http = HttpService(self.name, base_url, timeout=request_timeout, headers=headers)
        self._remote_ids: dict[str, str] = {}
        self._cancel_sent: set[str] = set()

    async def health(self) -> Health:
        return await _probe(self.http, self.health_path)

    async def close(self) -> None:
        await self.http.aclose()

    async def interrupt(self, job_id: str) -> None:
        remote = self._remote_ids.get(job_id)
        if remote is None or self.cancel_path is None or remote in self._cancel_sent:
            return
        self._cancel_sent.add(remote)
        try:
            await self.http.request("POST", _fill(self.cancel_path, remote), json_body={})
        except JobFailed as exc:
            log.warning("could not cancel remote job %s of %s: %s", remote, job_id, exc.message)

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        if cancel.is_set():
            raise JobCancelled("cancelled before submission")
        response = await until_cancelled(
            self.http.request("POST", self.submit_path, json_body=_body(job)), cancel
        )
        if not response.is_success:
            raise status_failure(self.name, response, "submission")
        answer = response_json(response)
        remote = (answer.get("id") or answer.get("job_id")) if isinstance(answer, Mapping) else None
        if not isinstance(remote, str | int) or isinstance(remote, bool) or remote == "":
            raise JobFailed(
                f"{self.name} accepted the job but its answer has no id or job_id: "
                f"{body_excerpt(response)}",
                retryable=True,
            )
        remote = str(remote)
        self._remote_ids[job.job_id] = remote
        try:
            await progress(0.0, f"submitted as {remote}")
            return await self._follow(job, remote, progress, cancel)
        except JobCancelled:
            await self.interrupt(job.job_id)
            raise
        finally:
            self._remote_ids.pop(job.job_id, None)
            self._cancel_sent.discard(remote)

    async def _follow(
        self, job: JobContext, remote: str, progress: ProgressFn, cancel: asyncio.Event
    ) -> Any:
        deadline = time.monotonic() + self.timeout
        last: tuple[float, str] | None = None
        best = 0.0
        while True:
            response = await until_cancelled(
                self.http.request("GET", _fill(self.status_path, remote)), cancel
            )
            if not response.is_success:
                raise _after_submission(status_failure(self.name, response, "status request"))
            status = response_json(response)
            if not isinstance(status, Mapping):
                status = {}
            state = str(status.get("status") or "").lower()
            if state in _DONE:
                return await self._result(remote, status, cancel)
            if state in _FAILED:
                error = str(status.get("error") or status.get("message") or "remote job failed")
                retryable = status.get("retryable")
                raise JobFailed(
                    f"{self.name} job {remote} failed: {error}",
                    retryable=retryable if isinstance(retryable, bool) else True,
                    details={"remote_id": remote, "status": dict(status)},
                )
            if state in _CANCELLED:
                if cancel.is_set() or remote in self._cancel_sent:
                    raise JobCancelled(f"{self.name} cancelled job {remote}")
                raise JobFailed(f"{self.name} cancelled job {remote} on its own", retryable=True)
            value = status.get("progress")
            if isinstance(value, int | float) and not isinstance(value, bool):
                best = max(best, min(99.0, float(value)))
            message = str(status.get("message") or state or "waiting")
            if (best, message) != last:
                last = (best, message)
                await progress(best, message)
            if time.monotonic() >= deadline:
                raise JobFailed(
                    f"{self.name} job {remote} did not finish within {self.timeout:g} s "
                    f"(last status {state or '?'})",
                    retryable=True,
                    details={"remote_id": remote},
                )
            if await wait_cancelled(cancel, self.poll_seconds):
                raise JobCancelled(f"cancelled while {self.name} job {remote} was {state}")

    async def _result(self, remote: str, status: Mapping[str, Any], cancel: asyncio.Event) -> Any:
        if self.result_path is None:
            return status.get("result", dict(status))
        response = await until_cancelled(
            self.http.request("GET", _fill(self.result_path, remote)), cancel
        )
        if not response.is_success:
            raise _after_submission(status_failure(self.name, response, "result request"))
        return _json_result(response)


def _fill(path: str, remote: str) -> str:
    segment = quote(remote, safe="")
    if "{id}" in path:
        return path.replace("{id}", segment)
    return f"{path.rstrip('/')}/{segment}"


def _after_submission(failure: JobFailed) -> JobFailed:
    """Once the service accepted the payload, a refused status or result call (say a 404
    because it lost the job) says nothing against the payload: another attempt may work."""
    failure.retryable = True
    return failure
