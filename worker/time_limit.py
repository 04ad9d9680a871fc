"""Jobs' time limits (timeout_seconds), kept on the task that runs each job's connector.

Every job has a limit (30 minutes unless its submitter set one), and nearly every job ends
within it. So a limit costs its job only its entry in a set: one timer, `LimitWatch`, stands
for all of them, armed for the earliest deadline. A timer per job, armed and cancelled
(`call_later`, then its `cancel`), cost a no-op job about 3 us of the worker's ~150 us on
the 2-core dev box, on the path between one job's completion and the next job's start.

A limit that expires stops its connector as any job is stopped (the cancel event, the
connector's interrupt, then its task's cancellation) and the job fails as timed out. A
connector that swallows the cancellation cannot keep its job past the limit unnoticed:
`grace` seconds later the failure is reported without it. Its slot stays taken until it
does return, since its service is still busy with the job.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from worker.connectors.base import Connector

logger = logging.getLogger(__name__)
R = TypeVar("R")


class LimitWatch:
    """One timer for a worker's running limits, armed for the earliest deadline among those
    added since it last fired. A limit whose job ended is only dropped from the set: the
    timer, when it fires for it, finds nothing due and is armed for the next deadline."""

    def __init__(self) -> None:
        self._limits: set[TimeLimit[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf
        # The loop the timer is armed in: a runner used again in another loop (a test's)
        # must not count on a timer left in one that is gone.
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, limit: TimeLimit[Any]) -> None:
        self._limits.add(limit)
        if limit.deadline < self._armed_for or self._loop is not asyncio.get_running_loop():
            self._arm(limit.deadline)

    def discard(self, limit: TimeLimit[Any]) -> None:
        self._limits.discard(limit)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = deadline
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, math.inf
        now = asyncio.get_running_loop().time()
        # A timer may fire a little before its time (the loop's clock resolution): a limit
        # not yet due is then found at the next firing, armed for it below.
        for limit in [limit for limit in self._limits if limit.deadline <= now]:
            self._limits.discard(limit)
            limit.expire()
        if self._limits:
            self._arm(min(limit.deadline for limit in self._limits))


class TimeLimit(Generic[R]):
    """The limit of the job running on the current task; `report_timeout` reports it timed
    out (its message is made only then) and gives the job's outcome."""

    __slots__ = (
        "_cancel",
        "_cancelled_task",
        "_connector",
        "_connector_done",
        "_ended",
        "_grace",
        "_job_id",
        "_report_timeout",
        "_stopping",
        "_task",
        "_watch",
        "deadline",
    )

    def __init__(
        self,
        watch: LimitWatch,
        seconds: float,
        grace: float,
        job_id: str,
        cancel: asyncio.Event,
        connector: Connector,
        report_timeout: Callable[[], Awaitable[R]],
    ) -> None:
        self.deadline = asyncio.get_running_loop().time() + seconds
        self._watch = watch
        self._grace = grace
        self._job_id = job_id
        self._cancel = cancel
        self._connector = connector
        self._report_timeout = report_timeout
        self._task = asyncio.current_task()
        # Whether the connector returned or raised; the event `_stop` waits on is made only
        # once the limit expires: most jobs end in time, and never need it.
        self._connector_done = False
        self._ended: asyncio.Event | None = None
        self._cancelled_task = False
        self._stopping: asyncio.Task[R | None] | None = None
        watch.add(self)

    def connector_ended(self) -> bool:
        """Called on the job's task when the connector returned or raised; True when the
        limit expired first (then `outcome()` is the job's)."""
        self._watch.discard(self)
        self._connector_done = True
        if self._ended is not None:
            self._ended.set()
        return self._stopping is not None

    async def outcome(self) -> R:
        if self._cancelled_task and self._task is not None:
            self._task.uncancel()  # the limit's own cancellation, delivered to the connector
        assert self._stopping is not None
        reported = await self._stopping
        return reported if reported is not None else await self._report_timeout()

    def expire(self) -> None:
        """The deadline passed (LimitWatch): stop the connector."""
        self._stopping = asyncio.create_task(self._stop())

    async def _stop(self) -> R | None:
        """Stop the connector; None once it has stopped (its task reports then), or the
        outcome reported without it when it did not stop within the grace."""
        self._ended = ended = asyncio.Event()
        if self._connector_done:
            ended.set()
        self._cancel.set()
        await self._connector.interrupt(self._job_id)
        if not ended.is_set() and self._task is not None:
            self._cancelled_task = True
            self._task.cancel()
        try:
            await asyncio.wait_for(ended.wait(), self._grace)
        except TimeoutError:
            logger.warning(
                "job %s: connector %s did not stop within %gs of its time limit; reporting "
                "the timeout without it",
                self._job_id,
                self._connector.name,
                self._grace,
            )
            return await self._report_timeout()
        return None
