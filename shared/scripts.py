"""Loads the Lua scripts in `shared/lua/` and calls them with the common arguments.

Each script's source is `lib.lua` followed by the script, so the matcher and the queue
helpers exist once. Scripts run with EVALSHA (`register_script` reloads them after a
SCRIPT FLUSH or a server restart); Redis Functions are avoided so Redis 6.2 works too.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from shared.keys import Keys

SCRIPT_NAMES: Final = (
    "submit",
    "submit_batch",
    "claim",
    "heartbeat",
    "register",
    "deregister",
    "progress",
    "complete",
    "complete_claim",
    "fail",
    "release",
    "cancel",
    "retry",
    "reap",
    "cleanup",
    "worker_state",
    "match",
    "reprioritize",
)


@cache
def source(name: str) -> str:
    """The full text EVALSHA runs for script `name`: the library, then the script."""
    lua = resources.files("shared") / "lua"
    lib = (lua / "lib.lua").read_text(encoding="utf-8")
    body = (lua / f"{name}.lua").read_text(encoding="utf-8")
    return f"{lib}\n{body}"


class Scripts:
    """Registered scripts for one Redis client and key prefix."""

    def __init__(self, redis: Redis, keys: Keys, *, events_max: int, retention_ms: int) -> None:
        self._keys = keys
        self._common: tuple[str | int, ...] = (keys.prefix, events_max, retention_ms)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in SCRIPT_NAMES
        }

    async def call(
        self, name: str, *args: str | int | float | bytes, client: Redis | Pipeline | None = None
    ) -> Any:
        return await self._scripts[name](
            keys=[self._keys.pending], args=[*self._common, *args], client=client
        )
