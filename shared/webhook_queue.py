"""Webhook deliveries in Redis: the consumer group that shares the stream's job events out
among the hubs, the retry schedule of deliveries that failed, and their dead letter.

The hubs decide what to send and send it (hub/webhooks/); everything that touches Redis is
here. A delivery lives in three places over its life:

1. a job event in the `events` stream, handed to one hub by the `webhooks` consumer group
   and pending there until that hub acknowledges it (another hub takes it over when it stays
   pending too long: the holder died);
2. after a failed first attempt, a `webhook:{id}` hash scheduled in `webhooks:due`
   (webhook_defer.lua), taken under a lease for each further attempt (webhook_take.lua)
   and settled with its outcome (webhook_settle.lua);
3. after its last failure, the dead letter `webhooks:failed`, from which an operator may
   send it again (webhook_redeliver.lua).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import msgspec

from shared.errors import BrokerError
from shared.event_group import EventGroup
from shared.job import ms_to_iso
from shared.keys import Keys
from shared.redis_types import RedisClient
from shared.scripts import Scripts
from shared.text import as_text

# The consumer group on `events` that carries webhook deliveries.
GROUP: Final = "webhooks"
DeliveryStatus = Literal["retrying", "failed"]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = ("retrying", "failed")
Redelivered = Literal["ok", "not_failed", "missing"]
_VIEW_FIELDS: Final = (
    "id", "status", "url", "event", "job", "customer", "attempts", "created_at",
    "last_attempt_at", "next_attempt_at", "finished_at", "last_error", "last_status",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff base * 2^(attempts-1) capped at `cap_ms`, times a random [0.5, 1); no attempt
    is scheduled later than `horizon_ms` after the first one (then: the dead letter)."""

    base_ms: int
    cap_ms: int
    horizon_ms: int

    def args(self) -> list[int | float]:
        return [self.base_ms, self.cap_ms, self.horizon_ms, random.random()]


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """A first attempt that failed: what webhook_defer.lua records for the retries."""

    delivery_id: str
    url: str
    body: bytes
    event: str
    job_id: str
    customer_id: str | None
    error: str
    status: int | None
    retryable: bool


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery taken for an attempt: `token` fences the outcome (settle)."""

    id: str
    token: str
    url: str
    body: bytes
    attempts: int


class Delivery(msgspec.Struct, kw_only=True):
    """A delivery being retried or dead-lettered, as operators see it. Times are epoch ms."""

    id: str
    status: str
    url: str
    event: str
    job_id: str
    customer_id: str | None = None
    attempts: int
    created_at: int
    last_attempt_at: int | None = None
    next_attempt_at: int | None = None
    finished_at: int | None = None
    last_error: str | None = None
    last_status: int | None = None

    def to_public(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        for name in ("created_at", "last_attempt_at", "next_attempt_at", "finished_at"):
            out[name] = ms_to_iso(out.get(name))
        return out


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _opt_int(value: str | None) -> int | None:
    return int(value) if value else None


def _delivery(row: Sequence[Any]) -> Delivery | None:
    f = dict(zip(_VIEW_FIELDS, (as_text(v) if v is not None else None for v in row), strict=True))
    if f["id"] is None:
        return None
    return Delivery(
        id=f["id"],
        status=f["status"] or "",
        url=f["url"] or "",
        event=f["event"] or "",
        job_id=f["job"] or "",
        customer_id=f["customer"] or None,
        attempts=int(f["attempts"] or 0),
        created_at=int(f["created_at"] or 0),
        last_attempt_at=_opt_int(f["last_attempt_at"]),
        next_attempt_at=_opt_int(f["next_attempt_at"]),
        finished_at=_opt_int(f["finished_at"]),
        last_error=f["last_error"] or None,
        last_status=_opt_int(f["last_status"]),
    )


class WebhookQueue:
    """The Redis side of webhook delivery for one key prefix (`Broker.webhooks`)."""

    def __init__(self, redis: RedisClient, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts

    def group(self, consumer: str) -> EventGroup:
        """This process's membership of the delivery group, as consumer `consumer`."""
        return EventGroup(self._redis, self._keys.events, GROUP, consumer)

    async def subscriptions(self, job_ids: Sequence[str]) -> list[str | None]:
        """Each job's stored subscription (JSON, shared.webhook.Webhook), None for none."""
        if not job_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self._keys.job(job_id), "webhook")
            replies = await pipe.execute()
        return [as_text(r) if r is not None else None for r in replies]

    async def defer(self, failed: Sequence[FailedAttempt], policy: RetryPolicy) -> list[str]:
        """Record first attempts that failed: each is scheduled for a retry ('retrying'),
        dead-lettered ('failed'), or was recorded already ('exists')."""
        args: list[str | int | float | bytes] = [*policy.args(), len(failed)]
        for f in failed:
            args += [
                f.delivery_id, f.url, f.body, f.event, f.job_id, f.customer_id or "",
                f.error[:1000], "" if f.status is None else f.status, "1" if f.retryable else "0",
            ]  # fmt: skip
        if not failed:
            return []
        return [as_text(r) for r in await self._scripts.call("webhook_defer", *args)]

    async def take_due(self, limit: int, lease_ms: int) -> tuple[list[DueDelivery], int | None]:
        """Deliveries due for an attempt (up to `limit`), each leased to the caller for
        `lease_ms`; and the ms until the next one falls due (None: none is scheduled)."""
        reply = await self._scripts.call("webhook_take", limit, lease_ms)
        wait = as_text(reply[0])
        flat = reply[1:]
        due = [
            DueDelivery(
                as_text(flat[i]),
                as_text(flat[i + 1]),
                as_text(flat[i + 2]),
                _as_bytes(flat[i + 3]),
                int(flat[i + 4]),
            )
            for i in range(0, len(flat), 5)
        ]
        return due, int(wait) if wait else None

    async def settle(
        self,
        delivery: DueDelivery,
        *,
        error: str | None,
        status: int | None,
        retryable: bool,
        policy: RetryPolicy,
    ) -> str:
        """The outcome of an attempt on a delivery taken with `take_due` (error None: it was
        delivered): 'delivered', 'retrying', 'failed' or 'stale' (the lease had run out)."""
        outcome = await self._scripts.call(
            "webhook_settle",
            delivery.id,
            delivery.token,
            "delivered" if error is None else (error[:1000] or "failed"),
            "" if status is None else status,
            "1" if retryable else "0",
            *policy.args(),
        )
        return as_text(outcome)

    async def redeliver(self, delivery_id: str) -> Redelivered:
        """Send a dead-lettered delivery out again, due at once with a fresh retry horizon."""
        outcome = as_text(await self._scripts.call("webhook_redeliver", delivery_id))
        if outcome not in ("ok", "not_failed", "missing"):
            raise BrokerError(f"webhook_redeliver: unexpected reply {outcome!r}")
        return cast(Redelivered, outcome)

    async def get(self, delivery_id: str) -> Delivery | None:
        row = await self._redis.hmget(self._keys.webhook(delivery_id), list(_VIEW_FIELDS))
        return _delivery(row)

    async def listing(
        self, status: DeliveryStatus, *, offset: int, limit: int
    ) -> tuple[list[Delivery], bool]:
        """A page of deliveries in `status`: dead letters newest first, retries by when they
        are due. Returns the page and whether more follow."""
        if status == "failed":
            ids = await self._redis.zrevrange(self._keys.webhooks_failed, offset, offset + limit)
        else:
            ids = await self._redis.zrange(self._keys.webhooks_due, offset, offset + limit)
        more = len(ids) > limit
        async with self._redis.pipeline(transaction=False) as pipe:
            for delivery_id in ids[:limit]:
                pipe.hmget(self._keys.webhook(as_text(delivery_id)), list(_VIEW_FIELDS))
            rows = await pipe.execute()
        found = [d for row in rows if (d := _delivery(row)) is not None]
        return found, more
