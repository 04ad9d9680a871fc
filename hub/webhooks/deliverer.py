"""The delivery loops of one hub: at least once, shared with the other hubs, never lost to a
hub that dies.

Three loops share `HUB_WEBHOOK_CONCURRENCY` slots (attempts in flight):

- **intake**: XREADGROUP on each pool's `events` stream as this hub's consumer of that
  stream's `webhooks` group (one loop per pool). Each job event goes to one hub of the
  fleet. Entries that make no delivery are acknowledged at once; the others are attempted,
  and acknowledged only once every delivery they make succeeded or was recorded for a retry
  (`WebhookQueue.defer`). Until then the entry stays in the group's pending list, held by
  this hub.
- **take-over**: per pool, every half HUB_WEBHOOK_CLAIM_IDLE_SECONDS, XAUTOCLAIM the entries
  any consumer has held longer than that (a hub that died mid-delivery, or could not reach
  Redis to acknowledge) and deliver them as if new. Their ids and bodies are the same, so a
  receiver deduplicating by `webhook-id` sees each once; that is the only way a delivery is
  sent twice.
- **retries**: deliveries whose next attempt is due (`webhooks:due`, the default pool's:
  retries and the dead letter belong to no pool, and a non-default pool's delivery ids
  start with the pool, so they cannot collide), taken under a lease as long as the take-over
  threshold, so a hub that dies while retrying leaves them to the others too. The schedule
  and the dead letter are the Lua scripts' (include/webhooks.lua).

Hubs compete for entries only through Redis, so any number of them deliver together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import msgspec
from redis.exceptions import RedisError

from hub.webhooks.messages import Message, Target, plan
from hub.webhooks.sender import Outcome, Sender
from hub.webhooks.settings import WebhookSettings
from hub.webhooks.signing import Signer
from shared.event_group import EventGroup
from shared.event_stream import Entry
from shared.pools import DEFAULT_POOL
from shared.redaction import redact
from shared.webhook import Webhook
from shared.webhook_queue import DueDelivery, FailedAttempt, RetryPolicy, WebhookQueue

log = logging.getLogger("hub.webhooks")

BLOCK_MS = 2000  # one XREADGROUP waits this long for new entries
PRUNE_INTERVAL_S = 600.0  # how often consumers of departed hubs are forgotten...
PRUNE_IDLE_MS = 3_600_000  # ...once they hold nothing and were last seen this long ago
_decode_webhook = msgspec.json.Decoder(Webhook)


def consumer_name() -> str:
    """This process's consumer name: host and pid say which hub it is, the random part
    keeps a restarted process with a recycled pid apart from its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Slots:
    """A count of attempts in flight, shared by the loops, and a way to wait for room."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return max(0, self.size - self.used)

    async def wait_free(self) -> int:
        while self.used >= self.size:
            self._freed.clear()
            await self._freed.wait()
        return self.size - self.used

    def take(self) -> None:
        self.used += 1

    def give(self) -> None:
        self.used -= 1
        self._freed.set()


def _host(url: str) -> str:
    """What log lines say about a target: its host, never its path or query (which may
    carry a receiver's own tokens)."""
    return urlsplit(url).hostname or "?"


class Deliverer:
    """Delivers webhooks from this hub; `start()` joins the groups, `stop()` leaves them.

    `queue` keeps the retries and the dead letter (the default pool's: they belong to no
    pool); `intake` holds each pool's queue by pool name, whose stream and consumer group
    the first attempts come from (default: `queue` alone, as the default pool's)."""

    def __init__(
        self,
        queue: WebhookQueue,
        settings: WebhookSettings,
        *,
        sender: Sender | None = None,
        consumer: str | None = None,
        intake: Mapping[str, WebhookQueue] | None = None,
    ) -> None:
        if settings.secret is None:
            raise ValueError("webhook delivery needs HUB_WEBHOOK_SECRET")
        self._queue = queue
        self._intake = dict(intake) if intake else {DEFAULT_POOL: queue}
        self._settings = settings
        self._signer = Signer(settings.secret)
        self._sender = sender or Sender(
            settings.policy,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            max_connections=settings.concurrency,
        )
        self.consumer = consumer or consumer_name()
        self._groups: dict[str, EventGroup] = {
            pool: q.group(self.consumer) for pool, q in self._intake.items()
        }
        self._hub_target = (
            Target(settings.url, frozenset(settings.events)) if settings.url else None
        )
        self._policy = RetryPolicy(
            base_ms=int(settings.retry_base * 1000),
            cap_ms=int(settings.retry_cap * 1000),
            horizon_ms=int(settings.retry_for * 1000),
        )
        self._claim_idle_ms = int(settings.claim_idle * 1000)
        self._slots = Slots(settings.concurrency)
        self._in_flight: set[tuple[str, str]] = set()  # (pool, stream entry) attempted here
        self._attempts: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._due = asyncio.Event()  # a retry may have become due sooner than expected
        # delivered, attempts_failed, deferred, dead_lettered, taken_over, trimmed
        self.counts: Counter[str] = Counter()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        for group in self._groups.values():
            await group.ensure()
            group.open()
        # Intake and take-over per pool: each pool's stream is read on its own (on a
        # cluster it lives in the pool's slot); the retries are one loop over one due set.
        self._loops = [
            *(
                asyncio.create_task(self._read_loop(pool), name=f"emp-webhook-intake-{pool}")
                for pool in self._groups
            ),
            *(
                asyncio.create_task(self._take_over_loop(pool), name=f"emp-webhook-takeover-{pool}")
                for pool in self._groups
            ),
            asyncio.create_task(self._retry_loop(), name="emp-webhook-retries"),
        ]

    async def stop(self, grace: float = 2.0) -> None:
        """Stop reading; give attempts in flight `grace` seconds, then abandon them (their
        entries stay pending and another hub takes them over)."""
        for task in self._loops:
            # Cancelled again until it ends: a cancellation that lands while redis-py
            # finishes a command can be lost (seen with XACK under load), and the loop
            # would then block for a whole read before it noticed.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []
        if self._attempts:
            _, pending = await asyncio.wait(set(self._attempts), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for group in self._groups.values():
            await group.close()
        await self._sender.aclose()

    def wake(self) -> None:
        """A retry was scheduled or redelivered: look at the due set now."""
        self._due.set()

    # -- the loops ----------------------------------------------------------------------

    async def _read_loop(self, pool: str) -> None:
        async def once() -> None:
            free = await self._slots.wait_free()
            entries = await self._groups[pool].read_new(count=free, block_ms=BLOCK_MS)
            await self._begin(pool, entries)

        await self._forever(f"reading pool {pool}'s event stream", once)

    async def _take_over_loop(self, pool: str) -> None:
        interval = min(self._settings.claim_idle / 2, 30.0)
        next_prune = time.monotonic() + PRUNE_INTERVAL_S

        async def once() -> None:
            nonlocal next_prune
            # A timer, not a synchronisation: the work is whatever has become idle by then.
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            await self.take_over(pool)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL_S
                await self._groups[pool].prune_consumers(PRUNE_IDLE_MS)

        await self._forever("taking over idle deliveries", once)

    async def _retry_loop(self) -> None:
        await self._forever("taking due retries", self._retry_once)

    async def _forever(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` until cancelled; Redis trouble is logged once and retried with backoff."""
        delay = 0.05
        failing = False
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("webhooks: %s failed, retrying: %s", what, type(exc).__name__)
                failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                log.exception("webhooks: %s failed", what)
                await asyncio.sleep(1.0)
                continue
            failing = False
            delay = 0.05

    # -- first attempts -----------------------------------------------------------------

    async def take_over(self, pool: str | None = None) -> int:
        """Take over every entry of `pool`'s stream (None: every pool's) held longer than
        the claim threshold, as far as there is room; returns how many were taken over."""
        if pool is None:
            return sum([await self.take_over(p) for p in self._groups])
        group = self._groups[pool]
        start, taken = "0-0", 0
        while self._slots.free > 0:
            entries, start, trimmed = await group.claim_idle(
                min_idle_ms=self._claim_idle_ms, count=self._slots.free, start=start
            )
            if trimmed:
                self.counts["trimmed"] += trimmed
                log.warning(
                    "webhooks: %d held event(s) were trimmed from the stream before delivery",
                    trimmed,
                )
            fresh = [entry for entry in entries if (pool, entry[0]) not in self._in_flight]
            if fresh:
                taken += len(fresh)
                self.counts["taken_over"] += len(fresh)
                log.info("webhooks: took over %d delivery event(s) held too long", len(fresh))
                await self._begin(pool, fresh)
            if start == "0-0":
                break
        return taken

    async def _begin(self, pool: str, entries: Sequence[Entry]) -> None:
        """Start the deliveries `entries` of `pool`'s stream make; acknowledge those that
        make none. The jobs' subscriptions are read from the pool's own job hashes."""
        jobs = [(i, f) for i, f in entries if f.get("kind") == "job"]
        raw = await self._intake[pool].subscriptions([f.get("job", "") for _, f in jobs])
        idle = [i for i, f in entries if f.get("kind") != "job"]
        for (entry_id, fields), stored in zip(jobs, raw, strict=True):
            subscription = self._subscription(stored)
            messages = plan(entry_id, fields, subscription, self._hub_target, pool)
            if not messages:
                idle.append(entry_id)
                continue
            self._slots.take()
            self._in_flight.add((pool, entry_id))
            task = asyncio.create_task(self._first_attempts(pool, entry_id, messages))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        await self._groups[pool].ack(idle)

    @staticmethod
    def _subscription(stored: str | None) -> Webhook | None:
        if stored is None:
            return None
        try:
            return _decode_webhook.decode(stored)
        except msgspec.DecodeError:
            log.warning("webhooks: a job's stored subscription does not parse; skipped")
            return None

    async def _first_attempts(self, pool: str, entry_id: str, messages: list[Message]) -> None:
        try:
            outcomes = await asyncio.gather(*(self._attempt(m.id, m.url, m.body) for m in messages))
            failed = [
                FailedAttempt(
                    m.id, m.url, m.body, m.event, m.job_id, m.customer_id,
                    o.error, o.status, o.retryable,
                )
                for m, o in zip(messages, outcomes, strict=True)
                if not o.ok
            ]  # fmt: skip
            self.counts["delivered"] += len(messages) - len(failed)
            if failed:
                results = await self._queue.defer(failed, self._policy)
                for f, result in zip(failed, results, strict=True):
                    self._note_failure(f.delivery_id, f.url, f.error, result)
                self.counts["deferred"] += len(failed)
                self.wake()
            await self._groups[pool].ack([entry_id])
        except (RedisError, OSError) as exc:
            log.warning(
                "webhooks: could not record a delivery's outcome (%s); another hub takes "
                "it over after HUB_WEBHOOK_CLAIM_IDLE_SECONDS",
                type(exc).__name__,
            )
        finally:
            self._in_flight.discard((pool, entry_id))
            self._slots.give()

    async def _attempt(self, msg_id: str, url: str, body: bytes) -> Outcome:
        headers = self._signer.headers(msg_id, int(time.time()), body)
        outcome = await self._sender.post(url, body, headers)
        if not outcome.ok:
            self.counts["attempts_failed"] += 1
        return outcome

    # -- retries ------------------------------------------------------------------------

    async def _retry_once(self) -> None:
        free = await self._slots.wait_free()
        self._due.clear()
        due, wait_ms = await self._queue.take_due(free, self._claim_idle_ms)
        for delivery in due:
            self._slots.take()
            task = asyncio.create_task(self._retry(delivery))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        if len(due) == free:
            return  # full: there may be more due right now
        wait = 1.0 if wait_ms is None else min(max(wait_ms / 1000, 0.005), 1.0)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
        # arrives as the event is set, and the hub's shutdown then hangs on this loop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._due.wait()

    async def _retry(self, delivery: DueDelivery) -> None:
        try:
            outcome = await self._attempt(delivery.id, delivery.url, delivery.body)
            result = await self._queue.settle(
                delivery,
                error=None if outcome.ok else outcome.error,
                status=outcome.status,
                retryable=outcome.retryable,
                policy=self._policy,
            )
            if result == "delivered":
                self.counts["delivered"] += 1
            elif result != "stale":
                self._note_failure(delivery.id, delivery.url, outcome.error, result)
                self.wake()  # its next attempt may be due before the loop would look
        except (RedisError, OSError) as exc:
            log.warning(
                "webhooks: could not record a retry's outcome (%s); it is tried again once "
                "its lease runs out",
                type(exc).__name__,
            )
        finally:
            self._slots.give()

    def _note_failure(self, delivery_id: str, url: str, error: str, result: str) -> None:
        extra = {"delivery": delivery_id, "target": _host(url), "error": redact(error[:300])}
        if result == "failed":
            self.counts["dead_lettered"] += 1
            log.warning("webhook delivery dead-lettered", extra=extra)
        elif result == "retrying":
            log.info("webhook attempt failed; retry scheduled", extra=extra)
