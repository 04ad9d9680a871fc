"""Pools: independent queues, each under its own keys, the unit that scales out.

A pool is a complete queue (pending classes, leases, workers, events, statistics) under one
key prefix. A named pool's prefix carries a Redis Cluster hash tag, `{gpu-eu}:`, so every key
of the pool hashes to one slot: each Lua script touches only its pool's keys, and a cluster
spreads pools, not jobs, over its primaries. Add pools and the load spreads over more
primaries; within a pool the order is exact (priority, then FIFO).

The pool named `default` keeps the bare REDIS_KEY_PREFIX on a single Redis, so a fleet that
never names a pool keeps the key layout it always had; on a cluster it is tagged like any
other (`{default}:`), because untagged keys would scatter over slots.

On a single Redis pools are just prefixes: the same code path serves a laptop and a
cluster.

A job's id carries its pool, `gpu-eu!4f2c...` (the default pool's ids carry none), so
reading, cancelling or retrying a job needs no global lookup: `pool_of(job_id)` names the
only place it can be. `!` is in no id a client may choose (shared/validation.py), so a
client cannot write into another pool by its choice of id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from shared.config import ConfigError

DEFAULT_POOL: Final = "default"
POOL_SEPARATOR: Final = "!"
POOL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def check_pool_name(setting: str, name: str) -> str:
    """`name` if it is a valid pool name, else ConfigError naming `setting`."""
    if not POOL_NAME.fullmatch(name):
        raise ConfigError(
            setting, f"{name!r} is not a pool name (1-32 of a-z 0-9 _ -, starting a-z 0-9)"
        )
    return name


def check_pool_names(setting: str, names: Iterable[str]) -> tuple[str, ...]:
    """Valid, distinct and at least one: the pools one process serves."""
    out: list[str] = []
    for name in names:
        check_pool_name(setting, name)
        if name in out:
            raise ConfigError(setting, f"pool {name!r} is listed twice")
        out.append(name)
    if not out:
        raise ConfigError(setting, "names no pool")
    return tuple(out)


def pool_of(job_id: str) -> str:
    """The pool a job id belongs to (ids without a pool belong to `default`)."""
    pool, separator, _ = job_id.partition(POOL_SEPARATOR)
    return pool if separator else DEFAULT_POOL


def pooled_id(pool: str, job_id: str) -> str:
    """The id of job `job_id` in `pool`, as stored and shown."""
    return job_id if pool == DEFAULT_POOL else f"{pool}{POOL_SEPARATOR}{job_id}"


def pool_prefix(base: str, pool: str, *, cluster: bool) -> str:
    """The key prefix of `pool`: REDIS_KEY_PREFIX, then the pool's hash tag."""
    if pool == DEFAULT_POOL and not cluster:
        return base
    return f"{base}{{{pool}}}:"
