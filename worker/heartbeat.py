"""Heartbeats from a thread of their own, with their own event loop and Redis connection.

A job that blocks the worker's event loop (a connector doing synchronous I/O, a busy
callback) must not make the worker look dead and lose its leases. The thread keeps beating
as long as the interpreter can schedule it. What it reports: the status and capability
changes the main loop publishes under a lock, and the running jobs' tokens, which it asks
the worker for when it beats (not published for every job: a worker draining short jobs
would pay for a copy per job that only a beat every few seconds reads).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.capabilities import Capabilities
from shared.outage import REDIS_OUTAGE
from shared.redis_client import TRANSIENT_ERRORS
from shared.settings import BrokerSettings

if TYPE_CHECKING:
    from worker.links import WorkerBroker, WorkerLink

logger = logging.getLogger(__name__)


@dataclass
class Beat:
    """What the next heartbeat reports besides the running jobs. The main loop replaces
    it; the thread reads it."""

    status: str = "idle"
    caps: Capabilities | None = None  # set when capabilities changed since the last beat


class HeartbeatThread(threading.Thread):
    def __init__(
        self,
        open_link: Callable[[], WorkerLink],
        worker_id: str,
        settings: BrokerSettings,
        on_revoked: Callable[[list[str]], None],
        running_tokens: Callable[[], dict[str, str]],
    ) -> None:
        """`running_tokens` gives the running jobs' claim tokens; this thread calls it when
        it beats, so it must be safe to call from here."""
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self._open_link = open_link
        self._worker_id = worker_id
        self._settings = settings
        self._on_revoked = on_revoked
        self._running_tokens = running_tokens
        self._lock = threading.Lock()
        self._beat = Beat()
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.last_ok: float | None = None  # time.time() of the last acknowledged heartbeat
        self.failures = 0
        # Set once no heartbeat was acknowledged for longer than the lease (below).
        self.leases_presumed_lost = False
        self._acked = time.monotonic()  # the last acknowledgement, or the thread's start

    def update(self, *, status: str, caps: Capabilities | None = None) -> None:
        with self._lock:
            self._beat = Beat(status=status, caps=caps or self._beat.caps)

    def beat_now(self) -> None:
        """Send the next heartbeat without waiting for the interval (status changes)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        link = self._open_link()  # in this thread's loop: its connections belong here
        try:
            while not self._halt.is_set():
                await self._beat_once(link.broker)
                self._wake.wait(self._settings.heartbeat_interval)
                self._wake.clear()
        finally:
            await link.aclose()

    async def _beat_once(self, broker: WorkerBroker) -> None:
        with self._lock:
            beat = self._beat
            self._beat = Beat(status=beat.status)
        running = self._running_tokens()
        try:
            revoked = await broker.heartbeat(
                self._worker_id, status=beat.status, running=running, caps=beat.caps
            )
        except TRANSIENT_ERRORS as exc:
            self.failures += 1
            if beat.caps is not None:
                with self._lock:  # deliver the capability change with the next beat
                    if self._beat.caps is None:
                        self._beat.caps = beat.caps
            REDIS_OUTAGE.failed("heartbeat", exc)
            self._presume_leases_lost()
            return
        REDIS_OUTAGE.recovered()
        self.last_ok = time.time()
        self._acked = time.monotonic()
        self.failures = 0
        if self.leases_presumed_lost:
            self.leases_presumed_lost = False
            logger.info("heartbeats acknowledged again; %d running job(s) revoked", len(revoked))
        if revoked:
            self._on_revoked(revoked)

    def _presume_leases_lost(self) -> None:
        """Past the lease timeout without an acknowledged heartbeat, the hubs' reaper has
        (or soon will have) handed this worker's jobs to others: say so once. The jobs keep
        running (Redis may have kept the leases after all, e.g. when only this worker was cut
        off and the lease outlived the cut); fencing refuses their reports if they are gone,
        and the first heartbeat that gets through lists the jobs to interrupt."""
        silent = time.monotonic() - self._acked
        if self.leases_presumed_lost or silent <= self._settings.lease_timeout:
            return
        self.leases_presumed_lost = True
        logger.warning(
            "no heartbeat acknowledged for %.0f s, longer than the lease (%g s): assuming this "
            "worker's leases are gone; running jobs continue, fencing decides if they count",
            silent,
            self._settings.lease_timeout,
        )
