"""Reads of the worker fleet: the `workers` liveness index, worker hashes and their leases.

The hub lists and inspects workers through this; workers maintain the records themselves
through the Broker's register and heartbeat scripts. Reads are bounded: a fleet larger than
`MAX_WORKERS` is shown partially rather than read in one unbounded burst.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.keys import Keys
from shared.redis_types import RedisClient
from shared.text import as_text
from shared.worker_view import WorkerView, parse_worker

MAX_WORKERS = 5000  # fleet reads are bounded; past this the views are partial


class FleetReads:
    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def live(self, limit: int = MAX_WORKERS) -> list[WorkerView]:
        """Registered workers whose liveness deadline has not been reaped yet."""
        entries = await self._redis.zrange(self._keys.workers, 0, limit - 1)
        return await self._load([as_text(e) for e in entries])

    async def worker(self, worker_id: str) -> WorkerView | None:
        """Any worker whose hash still exists, live or offline (kept for the retention TTL)."""
        keys = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(keys.workers, worker_id)
            pipe.hgetall(keys.worker(worker_id))
            pipe.hgetall(keys.leases(worker_id))
            score, raw, leases = await pipe.execute()
        if not raw:
            return None
        return parse_worker(worker_id, raw, leases or {}, alive=score is not None)

    async def _load(self, ids: Sequence[str]) -> list[WorkerView]:
        """The live workers among `ids` whose hash still exists, in one round trip."""
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(self._keys.worker(worker_id))
                pipe.hgetall(self._keys.leases(worker_id))
            replies = await pipe.execute()
        out: list[WorkerView] = []
        for i, worker_id in enumerate(ids):
            raw, leases = replies[2 * i], replies[2 * i + 1]
            if raw:
                out.append(parse_worker(worker_id, raw, leases or {}, alive=True))
        return out
