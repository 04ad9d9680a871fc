"""Acknowledged means replicated: REDIS_WAIT_REPLICAS, and what happens when replicas lag.

Redis replicates asynchronously: a primary acknowledges a write before any replica has it,
so a failover can lose what the hub or a worker was told had happened: a submission, or a
claim and its fencing token (the new primary would then hand out the same token again).
With `REDIS_WAIT_REPLICAS=n` (n > 0) every state-changing script is sent as `EVALSHA` then
`WAIT n timeout` in one pipeline: one round trip, on one connection, so the WAIT covers the
script's writes (WAIT counts the replicas that acknowledged this connection's last write).
A batch's calls (Scripts.call_streamed) are written one by one, then the WAIT, on one
connection too.
Sentinel promotes the replica with the most data, so a change that n replicas hold survives
a failover unless all n are lost with the primary.

When fewer than n replicas acknowledge within REDIS_WAIT_TIMEOUT_MS the call raises
`NotReplicated`. The change exists on the primary (WAIT cannot undo it) and will usually
replicate a moment later; the caller just does not go on as if it were safe:

- the hub answers 503 (Retry-After: 1). A client that retries with the same job `id` or
  `Idempotency-Key` gets the same job back (200), and that answer waits too, so it is
  replicated by then (submit_job.lua rewrites a field of the job it found for this reason:
  without a write on the connection, WAIT would have nothing to wait for);
- a worker treats it like a moment without Redis: it retries the report with backoff, and
  hands a claim it got this way straight back (the job returns to the queue) instead of
  running it under a token that a failover could reissue.

`NotReplicated` is a redis ConnectionError, so every caller that already rides out an
unreachable Redis rides this out the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from shared.errors import EmpError


@dataclass(frozen=True, slots=True)
class Wait:
    """replicas: how many must hold a change before it counts (0: do not wait)."""

    replicas: int = 0
    timeout_ms: int = 1000


class NotReplicated(RedisConnectionError, EmpError):
    """Fewer replicas than required acknowledged the change in time. `replies` are the
    scripts' replies: the change happened on the primary."""

    def __init__(self, acked: int, wait: Wait, replies: Sequence[Any]) -> None:
        super().__init__(
            f"{acked} of {wait.replicas} replica(s) acknowledged within {wait.timeout_ms} ms "
            "(REDIS_WAIT_REPLICAS); the change is on the primary only"
        )
        self.acked = acked
        self.wait = wait
        self.replies = list(replies)

    def each(self) -> list[NotReplicated]:
        """One error per reply, each holding only its own: for calls that went together on
        behalf of different callers (group commit), so that none sees another's reply."""
        return [NotReplicated(self.acked, self.wait, [reply]) for reply in self.replies]
