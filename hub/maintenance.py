"""The maintenance loop: reaping, expiry of jobs no worker takes, retention, priority
aging and the per-minute queue depth sample, on an interval.

Every hub runs it; that is safe because each step is idempotent. `reap` and `cleanup` are
single Lua scripts (a second hub running them a moment later finds nothing left to do), and
aging computes a pure function of the job and the Redis clock, so two hubs re-scoring the
same job write the same value. Work per tick is bounded: reaping loops only while full
batches come back (up to a cap), aging visits at most `aging_batch` pending jobs per pass
and continues where it stopped on the next pass.

One `Maintenance` looks after one pool (its Broker): a hub runs one loop per pool it serves
(hub/app.py). The steps touch only their pool's keys, so they stay idempotent per pool, and
hubs serving overlapping POOLS share the work of the pools they have in common safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.priority import PriorityPolicy
from hub.series import service_depths
from hub.settings import HubSettings
from shared.broker import Broker
from shared.outage import REDIS_OUTAGE

log = logging.getLogger("hub.maintenance")

REAP_LIMIT = 500
MAX_REAP_ROUNDS = 20
AGING_CHUNK = 500
AGING_FIELDS = (
    "status", "priority", "customer_id", "deadline", "created_at", "effective_priority",
    "max_priority",
)  # fmt: skip


async def publish_policy(broker: Broker, priority: PriorityPolicy) -> None:
    """Publish this hub's job policy (retention, retry backoff, avoid window) and the
    fair-share weights of its customer tiers for every script to follow
    (publish_policy.lua), and say so when another hub had published different values: the
    last to publish wins, so hubs must agree."""
    me = socket.gethostname()
    before = await broker.publish_policy(me, priority.fair_share_weights())
    if before is None:
        return
    theirs = {k: v for k, v in before.items() if k != "by"}
    if theirs != broker.policy_values() and before.get("by") != me:
        log.warning(
            "another hub (%s) had published a different job policy %s; this hub's is %s: "
            "give every hub the same RESULT_RETENTION_SECONDS, RETRY_BACKOFF_SECONDS, "
            "RETRY_BACKOFF_MAX_SECONDS and RETRY_AVOID_SECONDS",
            before.get("by"),
            theirs,
            broker.policy_values(),
        )


@dataclass
class Maintenance:
    broker: Broker
    settings: HubSettings
    _aging_offset: int = 0
    _next_aging: float = 0.0
    _next_cleanup: float = 0.0
    _depth_minute: int = -1
    last_report: dict[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> PriorityPolicy:
        return self.settings.priority

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; errors are logged and the loop goes on."""
        interval = self.settings.broker.reaper_interval
        while not stop.is_set():
            try:
                await self.tick()
                REDIS_OUTAGE.recovered()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                REDIS_OUTAGE.failed("maintenance", exc)
            except RedisError as exc:
                log.warning("maintenance tick failed: %s", type(exc).__name__)
            except Exception:
                log.exception("maintenance tick failed")
            # Jitter keeps several hubs from ticking in lock step.
            delay = interval * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def tick(self, *, force: bool = False) -> dict[str, Any]:
        """One pass: reap always; retention and aging when their interval is due."""
        await publish_policy(self.broker, self.policy)  # back at once if Redis lost it
        report: dict[str, Any] = {"reaped": await self.reap()}
        report["depth_sampled"] = await self.sample_depth()
        if self.settings.max_pending_seconds > 0:
            report["expired"] = await self.expire_unclaimed()
        now = time.monotonic()
        if force or now >= self._next_cleanup:
            report["cleanup"] = await self.broker.cleanup()
            self._next_cleanup = now + self.settings.cleanup_interval
        if self.policy.time_dependent and (force or now >= self._next_aging):
            report["aged"] = await self.age()
            self._next_aging = now + self.settings.aging_interval
        self.last_report = report
        return report

    async def reap(self) -> dict[str, int]:
        totals = {"promoted": 0, "recovered": 0, "timed_out": 0}
        for _ in range(MAX_REAP_ROUNDS):
            report = await self.broker.reap(REAP_LIMIT)
            totals["promoted"] += report.promoted
            totals["recovered"] += len(report.recovered)
            totals["timed_out"] += len(report.timed_out)
            for worker_id, job_id, outcome in report.recovered:
                log.warning(
                    "recovered job from dead worker",
                    extra={"job_id": job_id, "worker_id": worker_id, "outcome": outcome},
                )
            for job_id, outcome in report.timed_out:
                log.warning("job timed out", extra={"job_id": job_id, "outcome": outcome})
            full = max(report.promoted, len(report.recovered), len(report.timed_out))
            if full < REAP_LIMIT:
                break
        return totals

    async def sample_depth(self) -> bool:
        """Offer this minute's queue depth per service for the dashboard's chart, once per
        Redis minute; True when it was recorded (False: already sampled, by this hub or by
        another that ticked earlier in the minute)."""
        minute = await self.broker.reads.now_ms() // 60_000
        if minute == self._depth_minute:
            return False
        recorded = await self.broker.sample_depth(await service_depths(self.broker.reads.jobs))
        self._depth_minute = minute  # after the call: a failed one is tried again next tick
        return recorded

    async def expire_unclaimed(self) -> int:
        """Fail the jobs no worker claimed within HUB_MAX_PENDING_SECONDS (expire_unclaimed.lua:
        idempotent, so every hub may run it)."""
        expired = 0
        for _ in range(MAX_REAP_ROUNDS):
            ids = await self.broker.expire_unclaimed(self.settings.max_pending_seconds, REAP_LIMIT)
            for job_id in ids:
                log.warning("job failed: no worker took it", extra={"job_id": job_id})
            expired += len(ids)
            if len(ids) < REAP_LIMIT:
                break
        return expired

    async def age(self) -> int:
        """Re-score up to `aging_batch` pending jobs whose effective priority changed."""
        jobs = self.broker.reads.jobs
        now_ms = await self.broker.reads.now_ms()
        visited = changed = 0
        while visited < self.settings.aging_batch:
            count = min(AGING_CHUNK, self.settings.aging_batch - visited)
            ids = await jobs.ids("pending", self._aging_offset, count)
            if not ids:
                self._aging_offset = 0
                break
            rows = await jobs.fields(ids, AGING_FIELDS)
            updates: dict[str, int] = {}
            for job_id, row in zip(ids, rows, strict=True):
                value = self._rescore(row, now_ms)
                if value is not None:
                    updates[job_id] = value
            if updates:
                changed += await self.broker.reprioritize(updates)
            visited += len(ids)
            self._aging_offset += len(ids)
            if len(ids) < count:
                self._aging_offset = 0
                break
        return changed

    def _rescore(self, row: list[str | None], now_ms: int) -> int | None:
        status, priority, customer, deadline, created, current, ceiling = row
        if status != "pending" or priority is None or created is None:
            return None
        value = self.policy.effective(
            int(priority),
            customer or None,
            deadline_ms=int(deadline) if deadline else None,
            created_ms=int(created),
            now_ms=now_ms,
            ceiling=int(ceiling) if ceiling else None,
        )
        return None if current is not None and int(current) == value else value
