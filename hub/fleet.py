"""The hub's cached view of the worker fleet, and the answer to "why is my job still waiting?".

Workers register themselves in Redis; the hub reads their records through the read model
(shared/fleet_reads.py). The matcher in shared/matching.py is the same specification the
claim script implements, so "no worker could ever run this" here means the same thing as in
the claim.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from shared.job import Job, ms_to_iso
from shared.matching import Demand, mismatch
from shared.scheduling.hold import describe_hold
from shared.worker_view import WorkerView

T = TypeVar("T")


class FleetCache(Generic[T]):
    """The live fleet, re-read at most every `max_age` seconds per hub.

    Reading the fleet costs two commands per worker; "why is my job waiting" on every
    GET of a pending job would otherwise multiply that by every client polling. A second
    of staleness is harmless for an explanation. Concurrent callers share one read.
    """

    def __init__(self, load: Callable[[], Awaitable[T]], max_age: float = 1.0) -> None:
        """`load` reads the live fleet (`FleetReads.live`, or every pool's: the hub's)."""
        self._load = load
        self._max_age = max_age
        self._value: T | None = None
        self._at = float("-inf")
        self._pending: asyncio.Future[T] | None = None

    async def get(self) -> T:
        if self._max_age <= 0:
            return await self._load()
        if self._value is not None and time.monotonic() - self._at < self._max_age:
            return self._value
        if self._pending is not None:
            return await asyncio.shield(self._pending)
        loop = asyncio.get_running_loop()
        self._pending = future = loop.create_future()
        try:
            value = await self._load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._pending = None
        self._value, self._at = value, time.monotonic()
        future.set_result(value)
        return value


def merge_workers(pools: Iterable[Sequence[WorkerView]]) -> list[WorkerView]:
    """The workers of several pools as one fleet: a worker registers in every pool it
    serves, so it appears once, with the jobs it holds in each pool and its counters summed;
    its status, state and capabilities are those of its freshest record."""
    merged: dict[str, WorkerView] = {}
    for views in pools:
        for view in views:
            seen = merged.get(view.id)
            if seen is None:
                merged[view.id] = dataclasses.replace(view, leases=list(view.leases))
                continue
            fresher = (view.last_heartbeat or 0) > (seen.last_heartbeat or 0)
            base = view if fresher else seen
            merged[view.id] = dataclasses.replace(
                base,
                alive=seen.alive or view.alive,
                leases=seen.leases + list(view.leases),
                claimed=seen.claimed + view.claimed,
                completed=seen.completed + view.completed,
                failed=seen.failed + view.failed,
            )
    return list(merged.values())


def why_waiting(
    job: Job, workers: Sequence[WorkerView], ahead: int | None, now_ms: int
) -> dict[str, Any]:
    """Explain a pending job's wait: `reason` is a stable code, `message` a sentence.

    Codes: backing_off (a retry waits out its backoff), no_workers, no_capable_worker
    (no registered worker could ever run it; the message names the unmet requirement),
    workers_paused, workers_busy (capable workers exist and are all busy: how many),
    held_by_policy (capable workers are idle, but a scheduling policy passed it over: `held`
    names the policy and its bound, shared/scheduling/hold.py), queued (capable workers are
    idle; it will be claimed shortly). `held` is set whatever the code when a policy holds
    the job back, and its sentence ends the message.
    """
    svc = job.service_type
    live = [w for w in workers if w.alive]
    counts: dict[str, int] = {"live": len(live), "offering": 0, "capable": 0, "busy": 0, "idle": 0}
    held = describe_hold(job, now_ms)

    def answer(reason: str, message: str) -> dict[str, Any]:
        if held is not None:
            reason = "held_by_policy" if reason == "queued" else reason
            message = f"{message}; {held['message']}"
        return {
            "reason": reason,
            "message": message,
            "workers": counts,
            "jobs_ahead": ahead,
            "held": held,
        }

    if job.retry_at is not None and job.retry_at > now_ms:
        return answer(
            "backing_off",
            f"attempt {job.attempts} failed; retry backs off until {ms_to_iso(job.retry_at)}",
        )
    if not live:
        return answer("no_workers", "no worker is registered")
    demand = Demand(svc, job.customer_id or "", job.requirements)
    offering = [w for w in live if svc in w.capabilities.services]
    counts["offering"] = len(offering)
    if not offering:
        return answer("no_capable_worker", f"no worker offers service {svc!r}")
    reasons: Counter[str] = Counter()
    capable: list[WorkerView] = []
    for w in offering:
        why = mismatch(demand, w.capabilities)
        if why is None:
            capable.append(w)
        else:
            reasons[why] += 1
    counts["capable"] = len(capable)
    if not capable:
        why, n = reasons.most_common(1)[0]
        return answer(
            "no_capable_worker",
            f"no worker offers service {svc!r} that can run it: {why} "
            f"({n} of {len(offering)} offering it)",
        )
    active = [w for w in capable if w.state == "active"]
    if not active:
        return answer("workers_paused", f"{len(capable)} capable worker(s), all paused or draining")
    idle = [w for w in active if not w.busy and mismatch(demand, w.capabilities, w.running) is None]
    counts["idle"] = len(idle)
    counts["busy"] = len(active) - len(idle)
    if not idle:
        return answer("workers_busy", f"{len(active)} capable worker(s), all busy")
    ahead_text = f"; {ahead} job(s) ahead in the queue" if ahead else ""
    return answer("queued", f"{len(idle)} capable worker(s) idle{ahead_text}")
