"""Reads of jobs and their indexes: summaries, index pages, counts and counters.

The hub's listings, dashboard, statistics and priority aging read through this; state only
ever changes through the Broker's scripts. Each method costs a fixed number of round trips
(pipelined where it reads many keys) and decodes what it reads, so callers only decide what
the answers mean. Key names come from shared.keys: routing reads per pool (Redis Cluster,
one hash tag per pool) is then a change to this module and the Keys it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.broker_replies import parse_job
from shared.job import Job
from shared.keys import Keys
from shared.redis_types import RedisClient
from shared.text import as_text

# A job hash without `payload` and `result`, which may be large: enough for every listing.
SUMMARY_FIELDS: Final = (
    "id", "service_type", "customer_id", "priority", "effective_priority", "requirements",
    "preferred_models", "status", "progress", "message", "error", "worker_id", "attempts",
    "max_retries", "timeout_ms", "deadline", "tags", "created_at", "claimed_at",
    "finished_at", "retry_at", "event_seq", "webhook", "held_by", "held_at", "held_since",
    "held_until",
)  # fmt: skip
# Finished registries are scored by finish time; they are read newest first.
NEWEST_FIRST: Final = frozenset({"completed", "failed", "cancelled"})
FINISHED: Final = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class ClassCounts:
    """One requirement class: its service and its pending jobs in each asked score range."""

    class_id: str
    service: str
    in_ranges: list[int]


@dataclass(frozen=True, slots=True)
class PendingCounts:
    """Pending jobs counted by score range, overall and per requirement class.

    `classes` is how many classes exist; `by_class` holds at most the `max_classes` read."""

    total: int
    backing_off: int
    in_ranges: list[int]
    by_class: list[ClassCounts]
    classes: int


def _summary(row: Sequence[Any]) -> dict[str, Any]:
    return {k: v for k, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None}


def _class_service(document: Any) -> str:
    """The service of a `classes` hash entry ({"s": service, ...}); "?" when unreadable."""
    try:
        return str(orjson.loads(document).get("s", "?"))
    except (orjson.JSONDecodeError, AttributeError):
        return "?"


class JobReads:
    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def fields(self, job_ids: Sequence[str], names: Sequence[str]) -> list[list[str | None]]:
        """The named fields of each job, in one round trip; None where a field is missing
        (every field of a job whose hash is gone)."""
        if not job_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._keys.job(job_id), list(names))
            rows = await pipe.execute()
        return [[None if v is None else as_text(v) for v in row] for row in rows]

    async def summaries(self, job_ids: Sequence[str]) -> list[Job | None]:
        """The jobs (without payload and result) for `job_ids`, None where the hash is gone."""
        out: list[Job | None] = []
        for row in await self.fields(job_ids, SUMMARY_FIELDS):
            fields = _summary(row)
            out.append(parse_job(fields) if "id" in fields and "status" in fields else None)
        return out

    async def summary_and_position(self, job_id: str) -> tuple[Job | None, int | None]:
        """One job's summary and its 0-based queue position, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._keys.job(job_id), SUMMARY_FIELDS)
            pipe.zrank(self._keys.pending, job_id)
            row, rank = await pipe.execute()
        fields = _summary(row)
        job = parse_job(fields) if "id" in fields else None
        return job, rank if isinstance(rank, int) else None

    async def result(self, job_id: str) -> Any:
        """A job's decoded result; None when it has none (or the job is gone)."""
        raw = await self._redis.hget(self._keys.job(job_id), "result")
        return orjson.loads(raw) if raw else None

    async def ids(self, status: str, start: int, count: int) -> list[str]:
        """Up to `count` job ids of the `status` index from `start`, in reading order:
        pending in queue order, active by execution deadline, finished ones newest first."""
        key = self._keys.status_index(status)
        end = start + count - 1
        if status in NEWEST_FIRST:
            ids = await self._redis.zrevrange(key, start, end)
        else:
            ids = await self._redis.zrange(key, start, end)
        return [as_text(i) for i in ids]

    async def scored_ids(self, status: str, start: int, count: int) -> list[tuple[str, float]]:
        """`ids` with each entry's score: what merging several pools' indexes into one
        reading order compares (queue score, execution deadline, finish time)."""
        key = self._keys.status_index(status)
        end = start + count - 1
        rows: Any  # (member, score) pairs
        if status in NEWEST_FIRST:
            rows = await self._redis.zrevrange(key, start, end, withscores=True)
        else:
            rows = await self._redis.zrange(key, start, end, withscores=True)
        return [(as_text(i), float(score)) for i, score in rows]

    async def scored_heads(self, counts: Mapping[str, int]) -> dict[str, list[tuple[str, float]]]:
        """`heads` with each entry's score, in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for status, count in counts.items():
                key = self._keys.status_index(status)
                if status in NEWEST_FIRST:
                    pipe.zrevrange(key, 0, count - 1, withscores=True)
                else:
                    pipe.zrange(key, 0, count - 1, withscores=True)
            replies = await pipe.execute()
        return {
            status: [(as_text(i), float(score)) for i, score in rows]
            for status, rows in zip(counts, replies, strict=True)
        }

    async def heads(self, counts: Mapping[str, int]) -> dict[str, list[str]]:
        """The first `counts[status]` ids of each status index, in reading order (as `ids`),
        all in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for status, count in counts.items():
                key = self._keys.status_index(status)
                if status in NEWEST_FIRST:
                    pipe.zrevrange(key, 0, count - 1)
                else:
                    pipe.zrange(key, 0, count - 1)
            replies = await pipe.execute()
        return {
            status: [as_text(i) for i in ids] for status, ids in zip(counts, replies, strict=True)
        }

    async def counts(self) -> dict[str, int]:
        """Jobs in each status index (finished ones within retention)."""
        names = ("pending", "active", *FINISHED)
        async with self._redis.pipeline(transaction=False) as pipe:
            for status in names:
                pipe.zcard(self._keys.status_index(status))
            replies = await pipe.execute()
        return dict(zip(names, map(int, replies), strict=True))

    async def pending_counts(
        self, score_ranges: Sequence[tuple[int, int]], *, max_classes: int
    ) -> PendingCounts:
        """Pending jobs per inclusive queue-score range, overall and per requirement class
        (at most `max_classes` classes), with ZCOUNT only: no job is read."""
        keys = self._keys
        raw_classes = await self._redis.hgetall(keys.classes)
        classes = [
            (as_text(class_id), _class_service(document))
            for class_id, document in list(raw_classes.items())[:max_classes]
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.pending)
            pipe.zcard(keys.delayed)
            for lo, hi in score_ranges:
                pipe.zcount(keys.pending, lo, hi)
            for class_id, _ in classes:
                for lo, hi in score_ranges:
                    pipe.zcount(keys.job_class(class_id), lo, hi)
            replies = [int(r) for r in await pipe.execute()]
        width = len(score_ranges)
        per_class = replies[2 + width :]
        return PendingCounts(
            total=replies[0],
            backing_off=replies[1],
            in_ranges=replies[2 : 2 + width],
            by_class=[
                ClassCounts(class_id, service, per_class[i * width : (i + 1) * width])
                for i, (class_id, service) in enumerate(classes)
            ],
            classes=len(raw_classes),
        )

    async def minute_counters(self, minutes: Sequence[int]) -> list[dict[str, int]]:
        """The per-minute counters the scripts keep (`stats:{minute}`), one dict per minute
        in the order asked; empty for a minute with no activity or past its expiry."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(self._keys.stats(minute))
            buckets = await pipe.execute()
        return [{as_text(k): int(v) for k, v in bucket.items()} for bucket in buckets]
