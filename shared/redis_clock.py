"""The Redis server clock: the one every timestamp in the job and worker hashes uses.

The scripts stamp `created_at`, `claimed_at`, heartbeats and retry times with Redis TIME,
so ages and "is it due yet" must be computed against that clock, not the caller's: hub
and worker machines may drift apart, the server is the only clock all of them share.
"""

from __future__ import annotations

from shared.redis_types import RedisClient


async def redis_now_ms(redis: RedisClient) -> int:
    """Redis server time in milliseconds since the epoch."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000
