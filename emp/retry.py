"""When a request is sent again, and how long the client waits before it does.

A request may be repeated only if repeating it cannot do anything twice:

- every request, when it provably never reached the hub (the connection could not be
  opened, or no pooled connection became free);
- idempotent requests (reads, and submissions, which carry an Idempotency-Key or ids)
  also after the connection broke once the request was on its way, after a timeout, and
  on 502/503/504 (a hub whose Redis is away, or a proxy in front of a restarting hub).

Cancel and retry are not idempotent in that sense (a second cancel answers 409), so they
are repeated only in the first case; otherwise the caller gets HubUnreachable, which says
that the hub may have carried the request out.

Waits grow exponentially with full jitter, so many clients that lost the same hub do not
come back in step; a Retry-After from the hub is honoured up to the cap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

import httpx

RETRY_STATUSES: Final = frozenset({502, 503, 504})
# Raised before a single byte of the request left this process.
NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all (the first included), waiting `backoff` * 2^n seconds at
    most before try n+2, never more than `max_backoff`."""

    attempts: int = 5
    backoff: float = 0.25
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must not be negative")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1 for the first)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** max(failures - 1, 0))
        wait = random.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


NO_RETRY: Final = RetryPolicy(attempts=1)


def may_resend(idempotent: bool, error: httpx.TransportError) -> bool:
    """Whether a request that failed with `error` may be sent again."""
    return idempotent or isinstance(error, NOT_SENT)


def may_repeat(idempotent: bool, status: int) -> bool:
    """Whether a request answered with `status` may be sent again."""
    return idempotent and status in RETRY_STATUSES


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the hub sends seconds; dates are ignored)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
