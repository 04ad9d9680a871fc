"""Runs one claimed job through its connector and reports the outcome exactly once.

The broker decides whether a report still counts (fencing); this module makes sure every
report is delivered: when Redis is unreachable the outcome waits here and is retried with
backoff, while other running jobs carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from shared.broker import Claim, Fence, NoClaim
from shared.errors import InvalidInput
from shared.job import Job
from shared.logs import job_id_var
from shared.outage import REDIS_OUTAGE
from shared.redis_client import TRANSIENT_ERRORS
from worker.connectors.base import Connector, JobCancelled, JobContext, JobFailed
from worker.connectors.output_store import stored_image_urls
from worker.links import WorkerBroker
from worker.time_limit import LimitWatch, TimeLimit

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds a connector has to stop once its job's time limit cancelled it; past them the job
# is reported failed without it.
CANCEL_GRACE = 10.0


class HeldJob(msgspec.Struct):
    """A job this worker holds, as the dashboard and the heartbeat see it. This and Outcome
    are Structs, made for every job: ten times cheaper to make than dataclasses
    (shared/broker_replies.py)."""

    job: Job
    token: str
    started: float = msgspec.field(default_factory=time.time)
    progress: float = 0.0
    message: str = ""
    cancel: asyncio.Event = msgspec.field(default_factory=asyncio.Event)
    cancel_reason: str = ""  # "revoked" (cancelled / reassigned / timed out) or "shutdown"


class Outcome(msgspec.Struct, frozen=True):
    job_id: str
    status: str  # completed | failed | retrying | cancelled | released | stale
    error: str | None
    seconds: float
    finished: float = msgspec.field(default_factory=time.time)
    # Presigned URLs of the images it stored (OUTPUT_STORE), for the dashboard's thumbnails.
    images: tuple[str, ...] = ()
    # The worker's next job, claimed in the same call that completed this one.
    next_claim: Claim | None = None
    # What that call's claim answered instead when it found no job (None: no claim was
    # tried, or it took one).
    no_claim: NoClaim | None = None


class JobRunner:
    def __init__(
        self,
        broker: WorkerBroker,
        worker_id: str,
        *,
        progress_interval: float,
        deliver_timeout: float = 3600.0,
        cancel_grace: float = CANCEL_GRACE,
        next_claim_caps: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        """`next_claim_caps` gives the capabilities to claim the next job with in the call
        that completes a job (one round trip instead of two), or None when the worker should
        not take more work now (stopping, paused). `cancel_grace`: seconds a connector has
        to stop once its job's time limit cancelled it (worker/time_limit.py)."""
        self._broker = broker
        self._worker_id = worker_id
        self._progress_interval = progress_interval
        self._deliver_timeout = deliver_timeout
        self._cancel_grace = cancel_grace
        self._limits = LimitWatch()
        self._next_claim_caps = next_claim_caps

    async def run(self, held: HeldJob, connector: Connector) -> Outcome:
        job = held.job
        token = job_id_var.set(job.id)
        try:
            return await self._run(held, connector)
        finally:
            job_id_var.reset(token)

    async def _run(self, held: HeldJob, connector: Connector) -> Outcome:
        job = held.job
        ctx = JobContext(
            job_id=job.id,
            service_type=job.service_type,
            payload=job.payload if isinstance(job.payload, dict) else {},
            customer_id=job.customer_id,
            attempt=job.attempts,
            timeout_seconds=job.timeout_seconds,
        )
        logger.debug("job started (service %s, attempt %d)", job.service_type, job.attempts + 1)
        # The connector runs on this task, not one of its own: a task and a wait for it
        # cost about as much as everything else the worker does for a no-op job. The time
        # limit is an entry in a set until it expires (worker/time_limit.py).
        limit: TimeLimit[Outcome] | None = None
        if job.timeout_seconds is not None:
            seconds = job.timeout_seconds
            limit = TimeLimit(
                self._limits,
                seconds,
                self._cancel_grace,
                job.id,
                held.cancel,
                connector,
                # The message is made only for a job that times out.
                lambda: self._fail(held, f"timed out after {seconds:g} s", retryable=True),
            )
        try:
            result = await connector.run(ctx, self._progress_reporter(held), held.cancel)
        except BaseException as exc:
            if limit is not None and limit.connector_ended():
                return await limit.outcome()
            if isinstance(exc, asyncio.CancelledError) and _this_task_cancelled():
                raise  # this task was cancelled (the loop is closing): the connector with it
            if isinstance(exc, JobCancelled | asyncio.CancelledError):
                return await self._cancelled(held)
            if isinstance(exc, JobFailed):
                return await self._fail(held, exc.message, retryable=exc.retryable)
            if not isinstance(exc, Exception):
                raise
            # A connector bug must not kill the worker.
            logger.error("connector %s raised %s: %s", connector.name, type(exc).__name__, exc)
            return await self._fail(held, f"{type(exc).__name__}: {exc}", retryable=True)
        if limit is not None and limit.connector_ended():
            return await limit.outcome()
        if held.cancel.is_set():
            return await self._cancelled(held)
        return await self._complete(held, result)

    def _progress_reporter(self, held: HeldJob) -> Callable[[float, str], Awaitable[None]]:
        """Record every update locally; forward at most one per interval to Redis, the first
        one interval into the job, so a chatty service cannot flood it and a short job costs
        no progress writes at all. A rejected update means the job is no longer ours."""
        last_sent = time.monotonic()

        async def report(progress: float, message: str) -> None:
            nonlocal last_sent
            held.progress, held.message = max(0.0, min(100.0, progress)), message
            now = time.monotonic()
            if now - last_sent < self._progress_interval or held.cancel.is_set():
                return
            last_sent = now
            try:
                fence = await self._broker.progress(
                    self._worker_id, held.job.id, held.token, held.progress, message
                )
            except TRANSIENT_ERRORS:
                return  # progress is best effort; the outcome is not
            if fence != "ok":
                held.cancel_reason = held.cancel_reason or "revoked"
                held.cancel.set()

        return report

    async def _complete(self, held: HeldJob, result: Any) -> Outcome:
        caps = self._next_claim_caps()
        follow_up: Claim | None = None
        no_claim: NoClaim | None = None
        fence: Fence
        try:
            if caps is None:
                fence = await self._deliver(
                    lambda: self._broker.complete(self._worker_id, held.job.id, held.token, result)
                )
            else:
                # A reply lost here and retried leaves the first claim unknown to us: the
                # heartbeat hands such an orphaned lease back (see heartbeat.lua).
                fence, claimed = await self._deliver(
                    lambda: self._broker.complete_and_claim(
                        self._worker_id, held.job.id, held.token, result, caps
                    )
                )
                if isinstance(claimed, Claim):
                    follow_up = claimed
                else:
                    no_claim = claimed
        except InvalidInput as exc:
            return await self._fail(held, f"result rejected: {exc.message}", retryable=False)
        status = "completed" if fence == "ok" else fence
        self._log_end(held, status, None)
        return Outcome(
            held.job.id,
            status,
            None,
            time.time() - held.started,
            images=stored_image_urls(result) if status == "completed" else (),
            next_claim=follow_up,
            no_claim=no_claim,
        )

    async def _fail(self, held: HeldJob, error: str, *, retryable: bool) -> Outcome:
        outcome = await self._deliver(
            lambda: self._broker.fail(
                self._worker_id, held.job.id, held.token, error, retryable=retryable
            )
        )
        self._log_end(held, outcome, error)
        return Outcome(held.job.id, outcome, error, time.time() - held.started)

    async def _cancelled(self, held: HeldJob) -> Outcome:
        """Stopped on request. Releasing is right either way: a revoked job's release is
        refused by fencing (and drops our stale lease); a job stopped for shutdown goes back
        to the queue without an attempt penalty."""
        reason = "worker stopping" if held.cancel_reason == "shutdown" else "interrupted"
        fence = await self._deliver(
            lambda: self._broker.release(self._worker_id, held.job.id, held.token, reason)
        )
        status = "released" if fence == "ok" else "cancelled"
        self._log_end(held, status, None)
        return Outcome(held.job.id, status, None, time.time() - held.started)

    async def _deliver(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a report until Redis takes it. Nothing else is lost meanwhile: leases live
        on while the heartbeat thread keeps reaching Redis, and fencing discards a report
        that arrives after the job was given to someone else."""
        delay = 0.1
        deadline = time.monotonic() + self._deliver_timeout
        while True:
            try:
                outcome = await call()
            except TRANSIENT_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise
                REDIS_OUTAGE.failed("report", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            REDIS_OUTAGE.recovered()
            return outcome

    @staticmethod
    def _log_end(held: HeldJob, status: str, error: str | None) -> None:
        seconds = time.time() - held.started
        if error:
            logger.info("job %s after %.2f s: %s", status, seconds, error)
        else:
            logger.info("job %s after %.2f s", status, seconds)


def _this_task_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
