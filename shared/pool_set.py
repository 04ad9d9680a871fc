"""The pools one process serves (POOLS), one Broker each, on one Redis client.

A hub routes a submission to one pool and finds a job by the pool its id names; it lists,
counts and maintains every pool it serves. A worker claims across its pools
(worker/pooled_broker.py). On a single Redis the brokers differ only in their key prefix;
on a cluster each pool's keys sit in one slot (shared/pools.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from shared.broker import Broker
from shared.pools import DEFAULT_POOL, pool_of
from shared.redis_types import RedisClient
from shared.settings import BrokerSettings


class PoolSet:
    def __init__(self, redis: RedisClient, settings: BrokerSettings) -> None:
        self.brokers: dict[str, Broker] = {
            pool: Broker(redis, settings, pool=pool) for pool in settings.pools
        }
        # A hub's pool for submissions no routing rule claims (the first of POOLS).
        self.default: Broker = self.brokers[settings.pools[0]]
        # The keeper of the keys that belong to no pool (rate limits, gateway grants and
        # gateway workers, webhook retries and dead letters): always the pool named
        # `default`, served or not, so every hub on one Redis finds them in one place
        # whatever POOLS it lists first.
        self.fleet_wide: Broker = self.brokers.get(DEFAULT_POOL) or Broker(
            redis, settings, pool=DEFAULT_POOL
        )

    def __iter__(self) -> Iterator[Broker]:
        return iter(self.brokers.values())

    def __len__(self) -> int:
        return len(self.brokers)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.brokers)

    def get(self, pool: str) -> Broker | None:
        """The broker of `pool`, or None when this process does not serve it."""
        return self.brokers.get(pool)

    def for_job(self, job_id: str) -> Broker | None:
        """The broker of the pool `job_id` names, or None when this process does not serve
        it (so, for a hub, no such job)."""
        return self.brokers.get(pool_of(job_id))
