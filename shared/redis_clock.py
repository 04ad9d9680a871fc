"""The Redis server clock: the one every timestamp in the job and worker hashes uses.

The scripts stamp `created_at`, `claimed_at`, heartbeats and retry times with Redis TIME,
so ages and "is it due yet" must be computed against that clock, not the caller's: hub
and worker machines may drift apart, the server is the only clock all of them share. On a
Redis Cluster each primary has a clock of its own, and a pool's timestamps come from the
primary serving its slot: TIME is asked there.
"""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from shared.redis_types import RedisClient


async def redis_now_ms(redis: RedisClient, key: str | None = None) -> int:
    """Redis server time in milliseconds since the epoch; on a cluster, that of the primary
    serving `key` (any node's without one)."""
    if isinstance(redis, RedisCluster) and key is not None:
        await redis.initialize()  # at once unless the client has no slot map yet
        node = redis.get_node_from_key(key)
        seconds, micros = await redis.execute_command("TIME", target_nodes=node)
    else:
        seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
