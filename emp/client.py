"""`Client`: the blocking SDK (AsyncClient in emp/async_client.py is its asyncio twin).

    from emp import Client

    with Client("http://hub:3001", token="...") as emp:
        job = emp.run("comfyui", {"workflow": graph}, timeout=600)
        for image in job.images():
            image.save("out/")

Every method is one REST call described in emp/_calls.py, carried out by `_send` with the
retry policy of emp/retry.py; `wait` long-polls (emp/_waiting.py) and `events` follows the
hub's WebSocket (emp/_stream_sync.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from emp import _calls, _stream_sync
from emp._calls import Call, Submitted
from emp._config import Config
from emp._resume import Selector
from emp._waiting import WaitPlan
from emp.errors import BadRequest, NotFound, WaitTimeout
from emp.fleet import Stats, Worker
from emp.models import Job, JobRequest, JobStatus
from emp.retry import RetryPolicy, may_repeat, may_resend, retry_after

T = TypeVar("T")

MAX_PAGE = 500  # GET /jobs takes at most this many per page


def new_job_id() -> str:
    """The hub's own id format, chosen here so a batch can be sent twice safely."""
    return f"job-{uuid.uuid4().hex}"


def check_page(page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE}")


def read_timeout(config: Config, call: Call[Any]) -> httpx.Timeout:
    # A long-poll's answer may take its whole wait; only the time beyond that is a fault.
    return httpx.Timeout(config.timeout, read=config.timeout + call.wait)


class Client:
    """A connection to one hub. `url` and `token` default to EMP_HUB_URL and EMP_TOKEN.

    Submissions are idempotent: each carries an Idempotency-Key (a fresh one per call
    unless you give your own), so the retries that follow a lost answer never create a
    second job. Reads are retried on connection errors and 502/503/504; `retry` sets how
    often and how patiently. `transport` replaces httpx's (tests, custom proxies).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._config = Config.resolve(url, token, timeout, retry)
        self._http = httpx.Client(
            base_url=self._config.url,
            headers=self._config.headers(),
            timeout=timeout,
            transport=transport,
        )

    @property
    def url(self) -> str:
        return self._config.url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- submitting ----------------------------------------------------------------------

    def submit(
        self,
        service_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        customer_id: str | None = None,
        priority: int | None = None,
        requirements: Mapping[str, Any] | None = None,
        id: str | None = None,
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        deadline: datetime | None = None,
        tags: Sequence[str] = (),
        idempotency_key: str | None = None,
        pool: str | None = None,
    ) -> JobHandle:
        """Queue a job and return its handle. A repeated `idempotency_key` (or `id`)
        returns the job it first created (`handle.created` is then False). `pool`: the
        pool to queue it in (None: the one the hub's rules pick, else its default)."""
        request = JobRequest(
            service_type=service_type,
            payload=payload,
            customer_id=customer_id,
            priority=priority,
            requirements=requirements,
            id=id,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            deadline=deadline,
            tags=tags,
            pool=pool,
        )
        key = idempotency_key or str(uuid.uuid4())
        return JobHandle(self, self._send(_calls.submit(request, key)))

    def submit_many(self, requests: Iterable[JobRequest]) -> list[JobHandle]:
        """Queue many jobs, 1,000 per request, each request all-or-nothing. Requests
        without an `id` get one, which makes each batch safe to send again; give ids
        yourself to make calling `submit_many` again after an error safe too."""
        ready = [r if r.id is not None else replace(r, id=new_job_id()) for r in requests]
        out: list[JobHandle] = []
        for start in range(0, len(ready), _calls.MAX_BATCH):
            chunk = ready[start : start + _calls.MAX_BATCH]
            out += [JobHandle(self, s) for s in self._send(_calls.submit_batch(chunk))]
        return out

    def run(
        self,
        service_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        customer_id: str | None = None,
        priority: int | None = None,
        requirements: Mapping[str, Any] | None = None,
        id: str | None = None,
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        deadline: datetime | None = None,
        tags: Sequence[str] = (),
        idempotency_key: str | None = None,
        pool: str | None = None,
    ) -> Job:
        """Submit, wait for the end and return the finished job; raise JobFailed if it
        failed or was cancelled, WaitTimeout when `timeout` seconds pass first."""
        handle = self.submit(
            service_type,
            payload,
            customer_id=customer_id,
            priority=priority,
            requirements=requirements,
            id=id,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            deadline=deadline,
            tags=tags,
            idempotency_key=idempotency_key,
            pool=pool,
        )
        return self.wait(handle.id, timeout=timeout).raise_for_status()

    # -- one job -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job with its payload and result; a pending one with why it waits."""
        return self._send(_calls.get_job(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes (None: however long it takes) and return it;
        raise WaitTimeout (carrying its last state) when `timeout` seconds pass first."""
        plan = WaitPlan(job_id, timeout)
        while (call := plan.next_call()) is not None:
            try:
                plan.last = self._send(call)
            except BadRequest as exc:
                if not plan.adopt_limit(exc):
                    raise
                continue
            if plan.last.terminal:
                return plan.last
            time.sleep(plan.pause())
        raise WaitTimeout(job_id, plan.last)

    def cancel(self, job_id: str, reason: str | None = None) -> Job:
        """Cancel a pending or active job (Conflict if it already finished)."""
        return self._send(_calls.cancel(job_id, reason))

    def retry(self, job_id: str) -> Job:
        """Send a failed job back to the queue with its attempts reset (operator)."""
        return self._send(_calls.retry(job_id))

    # -- many jobs, events, the fleet ------------------------------------------------------

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        service_type: str | None = None,
        customer_id: str | None = None,
        pool: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Every matching job (summaries: no payload or result), fetched a page at a time
        as you iterate: live work first, then finished jobs newest first; every pool the
        hub serves, or only `pool`."""
        check_page(page_size)
        cursor: str | None = None
        given = 0
        while limit is None or given < limit:
            size = page_size if limit is None else min(page_size, limit - given)
            page = self._send(
                _calls.list_jobs(
                    status=status,
                    service_type=service_type,
                    customer_id=customer_id,
                    limit=size,
                    cursor=cursor,
                    pool=pool,
                )
            )
            yield from page.jobs[:size]
            given += min(len(page.jobs), size)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def events(
        self,
        job_id: str | None = None,
        *,
        customer_id: str | None = None,
        everything: bool = False,
    ) -> _stream_sync.EventStream:
        """Live events of one job (first a Snapshot; the stream ends when the job does),
        of one customer's jobs, or of everything (operator: worker events too). The
        stream reconnects by itself and resumes from the last event it gave."""
        selector = Selector(job_id, customer_id, everything)
        return _stream_sync.EventStream(_stream_sync.events(self._config, selector, self._find))

    def workers(self, pool: str | None = None) -> list[Worker]:
        """The live workers (operator): of every pool the hub serves, or of `pool`."""
        return self._send(_calls.workers(pool))

    def stats(self, pool: str | None = None) -> Stats:
        """Queue, job counts, throughput, timings and fleet counts (operator): summed over
        every pool the hub serves (each pool's in `raw["pools"]`), or of `pool` alone."""
        return self._send(_calls.stats(pool))

    # -- plumbing -------------------------------------------------------------------------

    def _find(self, job_id: str) -> Job | None:
        try:
            return self.get(job_id)
        except NotFound:
            return None

    def _send(self, call: Call[T]) -> T:
        policy = self._config.retry
        failures = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    headers=call.headers,
                    timeout=read_timeout(self._config, call),
                )
            except httpx.TransportError as exc:
                failures += 1
                if failures >= policy.attempts or not may_resend(call.idempotent, exc):
                    raise _calls.unreachable(self.url, call, exc, failures) from exc
                time.sleep(policy.delay(failures))
                continue
            if failures + 1 < policy.attempts and may_repeat(call.idempotent, response.status_code):
                failures += 1
                time.sleep(policy.delay(failures, retry_after(response)))
                continue
            return _calls.answer(call, response)


class JobHandle:
    """A submitted job: its id, its last known state (`job`), and what you can do to it."""

    def __init__(self, client: Client, submitted: Submitted) -> None:
        self._client = client
        self.job = submitted.job
        self.created = submitted.created

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> JobStatus:
        return self.job.status

    def refresh(self) -> Job:
        self.job = self._client.get(self.id)
        return self.job

    def wait(self, timeout: float | None = None) -> Job:
        self.job = self._client.wait(self.id, timeout)
        return self.job

    def cancel(self, reason: str | None = None) -> Job:
        self.job = self._client.cancel(self.id, reason)
        return self.job

    def events(self) -> _stream_sync.EventStream:
        return self._client.events(self.id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.status}>"
