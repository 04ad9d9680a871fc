"""A private Redis-compatible server for zero-setup use (the hub's HUB_REDIS_PORT, the demo,
tests and benchmarks). Callers import everything from here.

`server` runs the process; its neighbours hold the other decisions: which binary (`binary`),
what to tell it (`config`: AOF ``everysec`` by default, password on stdin, never in ``ps``),
when it counts as up (`readiness`), and the one error type they all raise (`errors`).

A worker never starts one, so build.py leaves this package out of worker.pyz
(tests/unit/test_release_files.py holds it to that).
"""

from __future__ import annotations

from shared.embedded_redis.errors import EmbeddedRedisError
from shared.embedded_redis.server import EmbeddedRedis, find_server_binary, free_port

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "find_server_binary",
    "free_port",
]
