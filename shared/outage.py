"""One log line when Redis becomes unreachable, one when it answers again: not one per retry.

Every loop that talks to Redis (heartbeats, claims, reports, the control channel, the hub's
event reader, maintenance, requests answered 503) retries on its own schedule, with backoff.
During a failover or a restart they would all fail, each several times; logging every
attempt buries the one fact an operator needs, "Redis was unreachable from 12:00:01 to
12:00:04". So they report to the process's `REDIS_OUTAGE` instead: the first failure of an
outage is a warning naming who noticed and why, later failures are debug lines, and the
first success after it is one info line with the outage's length. Thread-safe: the
worker's heartbeat thread reports here too.
"""

from __future__ import annotations

import logging
import threading
import time


class Outage:
    def __init__(self, subject: str, logger: logging.Logger) -> None:
        self.subject = subject
        self._log = logger
        self._lock = threading.Lock()
        self._since: float | None = None  # time.monotonic() of the outage's first failure
        self._failures = 0

    @property
    def down_for(self) -> float | None:
        """Seconds since the current outage began; None while Redis answers."""
        since = self._since
        return None if since is None else time.monotonic() - since

    def failed(self, who: str, exc: BaseException) -> None:
        """`who` (a loop: "heartbeat", "claim", ...) could not reach Redis and will retry."""
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
                self._failures = 0
            self._failures += 1
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if first:
            self._log.warning(
                "%s unreachable (%s: %s); retrying with backoff, one line when it is back",
                self.subject,
                who,
                reason,
            )
        else:
            self._log.debug("%s still unreachable (%s: %s)", self.subject, who, reason)

    def recovered(self) -> None:
        """A call succeeded: ends the outage, if there is one."""
        if self._since is None:  # the common case: no lock, nothing to say
            return
        with self._lock:
            if self._since is None:
                return
            took, failures = time.monotonic() - self._since, self._failures
            self._since = None
        self._log.info(
            "%s reachable again after %.1f s (%d failed attempt(s))", self.subject, took, failures
        )


REDIS_OUTAGE = Outage("Redis", logging.getLogger("shared.outage"))
