"""The one small interface between the worker and a local AI service.

A connector turns a job payload into calls to its service and reports progress. The
worker owns everything else (claiming, leases, fencing, timeouts, retries), so a connector
stays a thin protocol adapter that can be tested against a fake of its service alone.

Lifecycle: `start()` once, then `run()` for each job (several at once when the worker has
several slots), `health()` periodically, `close()` at shutdown. Cancellation: the worker sets
`cancel` and then calls `interrupt(job_id)`; `run()` should then return promptly by raising
`JobCancelled`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

# progress(percent 0..100, message) -> None. Calls are cheap: the worker throttles them
# before they reach Redis, so connectors may report as often as their service tells them.
ProgressFn = Callable[[float, str], Awaitable[None]]


class JobContext(msgspec.Struct, frozen=True):
    """What a connector sees of a claimed job. A Struct, made for every job: ten times
    cheaper to make than a frozen dataclass (shared/broker_replies.py)."""

    job_id: str
    service_type: str
    payload: Mapping[str, Any]
    customer_id: str | None = None
    attempt: int = 0
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""
    # Facts about the service worth showing on dashboards (version, queue length, VRAM ...).
    info: Mapping[str, Any] = field(default_factory=dict)


class JobFailed(Exception):
    """The job failed. `retryable=False` for failures another attempt cannot fix (the
    service rejected the request as invalid); `details` is JSON-able context for the user."""

    def __init__(self, message: str, *, retryable: bool = True, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details = details


class JobCancelled(Exception):
    """`run()` stopped because the job was cancelled or timed out."""


class Connector(abc.ABC):
    """Base class of every connector. Subclasses set `name` (the service type they serve,
    as listed in SERVICES) and implement `run`."""

    name: str = ""

    async def start(self) -> None:
        """Open clients, probe the service. Must not raise when the service is down: the
        worker keeps running and `health()` reports the problem."""
        return None

    async def health(self) -> Health:
        return Health(ok=True)

    def capabilities(self) -> Mapping[str, Any]:
        """What this connector adds to the worker's capabilities, e.g. {"models": [...]}."""
        return {}

    def warm_models(self) -> Sequence[str]:
        """The models its service holds loaded right now, most recently used first, as far
        as the connector knows (worker/connectors/warm.py). The worker reads this after every
        job and health check, so it must be cheap: no I/O here."""
        return ()

    @abc.abstractmethod
    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        """Run one job to completion and return its JSON-able result. Raise JobFailed on
        failure and JobCancelled when `cancel` is set."""

    async def interrupt(self, job_id: str) -> None:
        """Ask the service to stop working on `job_id` (best effort, must not raise)."""
        return None

    async def close(self) -> None:
        """Release clients. Called once at shutdown."""
        return None


ConnectorFactory = Callable[[Mapping[str, str]], Connector]
