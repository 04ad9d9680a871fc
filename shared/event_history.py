"""A job's past events, read back from the `events` stream (the job page's timeline).

The stream is the fleet's ordered history, not an archive: it is capped (about 100,000
entries) and has no index by job. But its entry ids are Redis milliseconds, the clock of
the job's `created_at`, and a job's events are numbered 1..`event_seq` without gaps. So the
read scans only the job's own span of ids, from both ends (the first events, queued and
claimed, and the last ones, the outcome, are the ones that matter most), and stops as soon
as every event the job hash counts has been found. Each end scans at most `budget` entries,
so a job that shared its hours with a busy fleet costs a bounded read and gets the events
found; which ones are missing the caller sees from their `seq`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.event_stream import Entry
from shared.redis_types import RedisClient
from shared.text import as_text

CHUNK = 500


def _decode(raw: Sequence[tuple[object, Mapping[Any, Any] | None]] | None) -> list[Entry]:
    return [
        (as_text(entry_id), {as_text(k): as_text(v) for k, v in (fields or {}).items()})
        for entry_id, fields in raw or ()
    ]


class EventHistory:
    def __init__(self, redis: RedisClient, key: str) -> None:
        self._redis = redis
        self._key = key

    async def of_job(
        self,
        job_id: str,
        *,
        since_ms: int,
        until_ms: int | None,
        last_seq: int,
        budget: int = 2000,
    ) -> list[Entry]:
        """The job's events between `since_ms` and `until_ms` (None: the newest entry), in
        order of their per-job `seq`, each found once. Reads at most `budget` entries from
        each end of that span, fewer once seq 1..`last_seq` are all found."""
        found: dict[int, Entry] = {}

        def keep(entries: list[Entry]) -> None:
            for entry_id, fields in entries:
                if fields.get("job") == job_id and fields.get("kind", "job") == "job":
                    seq = int(fields.get("seq") or 0)
                    found.setdefault(seq, (entry_id, fields))

        def done() -> bool:
            return all(seq in found for seq in range(1, last_seq + 1))

        end = "+" if until_ms is None else str(until_ms)
        start, scanned, last_forward = str(since_ms), 0, None
        while scanned < budget and not done():
            batch = _decode(await self._redis.xrange(self._key, start, end, count=CHUNK))
            keep(batch)
            scanned += len(batch)
            if len(batch) < CHUNK:  # the whole span was read
                return [found[s] for s in sorted(found)]
            last_forward = batch[-1][0]
            start = "(" + last_forward
        # Then from the other end, down to where the forward scan stopped.
        floor = str(since_ms) if last_forward is None else "(" + last_forward
        scanned = 0
        while scanned < budget and not done():
            batch = _decode(await self._redis.xrevrange(self._key, end, floor, count=CHUNK))
            keep(batch)
            scanned += len(batch)
            if len(batch) < CHUNK:
                break
            end = "(" + batch[-1][0]
        return [found[s] for s in sorted(found)]
