"""Redis clients configured for a broker that must ride out network trouble.

redis-py 8 defaults (5 s socket timeout, 10 retries) suit neither side: a blocking BLPOP
needs no read timeout, and a worker on a flaky link wants keepalives, health checks and
retries with backoff instead of an exception at the first reset.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What "Redis is unreachable right now" looks like to callers that want to wait it out.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)


def connect(url: str, *, blocking: bool = False, max_connections: int = 64) -> Redis:
    """A client for commands (`blocking=False`: reads time out after 10 s, so a dead
    connection is noticed) or for blocking pops and pub/sub (`blocking=True`: no read
    timeout, the server holds the reply back on purpose)."""
    return Redis.from_url(
        url,
        socket_timeout=None if blocking else 10.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=30,
        max_connections=max_connections,
        retry=Retry(ExponentialWithJitterBackoff(cap=2.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
