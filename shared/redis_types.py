"""The type of a Redis client in this code base: one server (also behind Sentinel or TLS) or
a Redis Cluster. `shared.redis_client.connect` makes either, from settings; the broker code
takes either, and uses only what both offer (see shared/redis_client.py for what differs)."""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = Redis | RedisCluster
