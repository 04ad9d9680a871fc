"""Everything the hub reads without changing state, in one place: the read model.

State changes only through the Broker's scripts; reads that are not part of a transition
(listings, statistics, the fleet, fair-share state, the server clock, the event stream, a
job's past events)
come through here. The Broker exposes one as `broker.reads`, so hub modules never hold a
Redis client: they ask, then shape the answer for HTTP or WebSocket. With every key taken
from shared.keys, this is also the one place that will route reads per pool when Redis
Cluster support arrives.
"""

from __future__ import annotations

from shared.event_history import EventHistory
from shared.event_stream import EventStream
from shared.fair_reads import FairShareReads
from shared.fleet_reads import FleetReads
from shared.job_reads import JobReads
from shared.keys import Keys
from shared.redis_clock import redis_now_ms
from shared.redis_types import RedisClient


class Reads:
    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self.jobs = JobReads(redis, keys)
        self.fleet = FleetReads(redis, keys)
        self.fair = FairShareReads(redis, keys)
        self.history = EventHistory(redis, keys.events)

    async def now_ms(self) -> int:
        """Redis server time (ms): the clock of every timestamp the scripts write."""
        return await redis_now_ms(self._redis, self._keys.pending)

    def event_stream(self) -> EventStream:
        """A new tail of the `events` stream (each reader opens a connection of its own)."""
        return EventStream(self._redis, self._keys.events)
