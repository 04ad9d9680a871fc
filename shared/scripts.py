"""Loads the Lua scripts in `shared/lua/` and calls them with the common arguments.

A script names the library code it needs with `--- @include "name"` lines (as BullMQ does),
each naming `shared/lua/include/name.lua`; includes name their own includes the same way.
The text EVALSHA runs is every include the script needs, transitively, each once and after
the includes it needs, followed by the script. So the matcher and the queue helpers exist
once, and each script sends only the code it uses. Scripts run with EVALSHA (a NOSCRIPT
answer, after a SCRIPT FLUSH or a server restart, loads the script and sends the call
again); Redis Functions are avoided so Redis 6.2 works too. A single call on a plain client
goes straight to a pooled connection (`Scripts._direct`): it is the cost every submit,
claim and complete pays.

On a Redis Cluster every call goes to the primary serving the pool's slot: the prefix has a
hash tag, so KEYS[1] (`jobs:pending`) and every key a script derives from the prefix share
one slot, and Redis 7 lets a script touch keys it did not declare as long as they are in
the declared key's slot. redis-py's cluster client routes the EVALSHA by KEYS[1] and follows
MOVED and ASK itself; the two things it cannot do for us are done here: loading a script
after NOSCRIPT on the node that said it (not on every primary, one of which may be down),
and WAIT on the connection that ran the scripts (shared/cluster_scripts.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, Final

from redis.asyncio.client import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from shared.cluster_scripts import evalsha_then_wait
from shared.config import ConfigError
from shared.errors import EmpError
from shared.keys import Keys, hash_tag
from shared.redis_types import RedisClient
from shared.replication import NotReplicated, Wait

SCRIPT_NAMES: Final = (
    "submit",
    "submit_batch",
    "claim",
    "peek",
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
    "choose_eval",
    "reprioritize",
    "expire_unclaimed",
    "rate_limit",
    "publish_policy",
    "webhook_defer",
    "webhook_take",
    "webhook_settle",
    "webhook_redeliver",
    "sample_depth",
)


INCLUDE_PREFIX: Final = "--- @include"
_INCLUDE: Final = re.compile(r'--- @include "(?P<name>[a-z0-9_]+)"\s*')


class ScriptSourceError(EmpError):
    """A script's includes do not resolve (missing file, malformed line, cycle): a packaging
    or programming error, raised when the scripts are loaded rather than when first called."""


def _lua_text(relative: str) -> str:
    path = resources.files("shared") / "lua" / relative
    return path.read_text(encoding="utf-8")


def include_names(text: str, where: str) -> list[str]:
    """The includes `text` names, in order. A line that starts like an include but does not
    parse is an error rather than a silently missing function."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(INCLUDE_PREFIX):
            continue
        match = _INCLUDE.fullmatch(line)
        if match is None:
            raise ScriptSourceError(
                f'{where} line {number}: malformed include {line!r} (write --- @include "name")'
            )
        out.append(match["name"])
    return out


@cache
def _include(name: str) -> str:
    return _lua_text(f"include/{name}.lua")


def resolve(script: str, text: str) -> list[str]:
    """The includes `text` (script `script`) needs, transitively: each once, each after the
    includes it names, otherwise in the order they are named. Lua's locals are visible only
    below their definition, so this order is what makes every helper defined before use."""
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise ScriptSourceError(f"{script}.lua: include cycle {cycle}")
        where = f"{script}.lua" if not chain else f"include/{chain[-1]}.lua (for {script}.lua)"
        try:
            body = _include(name)
        except FileNotFoundError:
            raise ScriptSourceError(
                f"{where}: include {name!r} not found (no shared/lua/include/{name}.lua)"
            ) from None
        for needed in include_names(body, f"include/{name}.lua (for {script}.lua)"):
            visit(needed, (*chain, name))
        order.append(name)

    for name in include_names(text, f"{script}.lua"):
        visit(name, ())
    return order


def assemble(script: str, text: str) -> str:
    """`text` preceded by the includes it needs (see `resolve`)."""
    return "\n".join([*(_include(name) for name in resolve(script, text)), text])


@cache
def source(name: str) -> str:
    """The full text EVALSHA runs for script `name`: its includes, then the script."""
    return assemble(name, _lua_text(f"{name}.lua"))


# How many connections are kept for single calls (`Scripts._direct`) per connection pool:
# enough for a few callers at once; more callers than that take theirs from the pool and give
# it back. Kept per pool, not per Scripts, so that every Broker made on one client (one per
# pool of a PoolSet, or one per call in a careless script) shares the same few: the pool
# counts kept connections as in use, and a per-object store would hold some out of it for
# each Broker ever made.
KEPT_CONNECTIONS: Final = 4
_KEPT_ATTRIBUTE: Final = "_emp_kept_connections"


def _kept_for(pool: Any) -> list[Any]:
    """The connections kept for `pool`, stored on the pool itself so that they live exactly
    as long as it does. (A table beside it would keep every pool alive: a connection
    refers back to its pool.)"""
    kept: list[Any] | None = getattr(pool, _KEPT_ATTRIBUTE, None)
    if kept is None:
        kept = []
        setattr(pool, _KEPT_ATTRIBUTE, kept)
    return kept


# Scripts that change nothing: never worth waiting for replicas.
READ_ONLY: Final = frozenset({"match", "choose_eval", "peek"})


class Scripts:
    """Registered scripts for one Redis client and key prefix. With `wait.replicas` > 0 a
    state-changing call returns only once that many replicas hold its change, else raises
    NotReplicated (shared/replication.py)."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        events_max: int,
        retention_ms: int,
        wait: Wait | None = None,
    ) -> None:
        self._redis = redis
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        if self._cluster is not None and hash_tag(keys.prefix) is None:
            # Without one the keys of a pool scatter over slots, and every script fails.
            # Pools tag their prefixes on a cluster (shared/pools.py); only a REDIS_KEY_PREFIX
            # that spoils the tag gets here (an empty {} first: Redis hashes whole names).
            raise ConfigError(
                "REDIS_KEY_PREFIX",
                f"{keys.prefix!r} has no hash tag; on a Redis Cluster the keys of a pool must "
                "share one slot (remove the empty {} from REDIS_KEY_PREFIX)",
            )
        self._keys = keys
        self._wait = wait or Wait()
        self._common: tuple[str | int, ...] = (keys.prefix, events_max, retention_ms)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in SCRIPT_NAMES
        }
        # The plain client's pool, for `_direct`; None where a call must take redis-py's
        # own path (a cluster, or a client pinned to one connection).
        self._pool = (
            redis.connection_pool
            if isinstance(redis, Redis) and not redis.single_connection_client
            else None
        )
        # Connections `_direct` keeps between calls, taken from that pool (which counts
        # them as in use, and closes them with its others when the client is closed).
        self._kept: list[Any] = [] if self._pool is None else _kept_for(self._pool)
        # At most an eighth of the pool: a kept connection is one the pool cannot lend to
        # anything else (a pipeline, a read), so a small pool keeps none.
        self._kept_max = (
            0 if self._pool is None else min(KEPT_CONNECTIONS, self._pool.max_connections // 8)
        )

    async def call(self, name: str, *args: str | int | float | bytes) -> Any:
        if (self._wait.replicas and name not in READ_ONLY) or self._pool is None:
            return (await self.call_many(name, [args]))[0]
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, 1, self._keys.pending, *self._common, *args)
        try:
            return await self._direct(command)
        except NoScriptError:
            # This server has not seen the script (a restart, a failover); the call changed
            # nothing, so it is safe to send again once loaded.
            await self._redis.script_load(script.script)
            return await self._redis.execute_command(*command)

    async def _direct(self, command: tuple[str | int | float | bytes, ...]) -> Any:
        """One command on a pooled connection, without the rest of redis-py's per-command
        wrapping (timing and metrics hooks, event dispatch): about 20 us of the ~65 us a
        round trip costs through `execute_command` on the 2-core dev box, paid by every
        script call. What matters of that wrapping is kept: the connection's retry policy
        (the same attempts and backoff on a lost connection or a timeout, reconnecting in
        between, as redis-py would make), and the connection's own cleanup (it disconnects
        on any error while sending or reading, a cancellation included).

        The connection is one kept between calls (`_take`, `_put_back`, KEPT_CONNECTIONS)
        rather than one taken from the pool and given back each time: the pool's lock,
        its metrics hooks and its release event cost about 8 us a call, a tenth of a
        submission's client time."""
        conn = await self._take()

        async def attempt() -> Any:
            await conn.send_command(*command)
            return await conn.read_response()

        async def dropped(error: Exception) -> None:
            await conn.disconnect()

        try:
            return await conn.retry.call_with_retry(attempt, dropped)
        finally:
            await self._put_back(conn)

    async def _take(self) -> Any:
        """A connection for one call: a kept one when there is one, checked as the pool
        checks those it hands out (connected, nothing unread: else it reconnects), or else
        a new one from the pool."""
        assert self._pool is not None
        if not self._kept:
            return await self._pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py
        conn = self._kept.pop()
        try:
            await self._pool.ensure_connection(conn)
        except BaseException:
            await self._pool.release(conn)
            raise
        return conn

    async def _put_back(self, conn: Any) -> None:
        """Keep `conn` for the next call, up to `_kept_max` (one per call in flight
        at once: concurrent callers each keep theirs); beyond that it goes back to the
        pool, as does one the server asked to be reconnected (the pool would close it)."""
        assert self._pool is not None
        if len(self._kept) < self._kept_max and not conn.should_reconnect():
            self._kept.append(conn)
        else:
            await self._pool.release(conn)

    async def call_many(
        self, name: str, calls: Sequence[Sequence[str | int | float | bytes]]
    ) -> list[Any]:
        """Call script `name` once per argument list, in one pipeline (one round trip, in
        order), followed by WAIT when replicas must acknowledge."""
        script = self._scripts[name]
        wait = self._wait.replicas > 0 and name not in READ_ONLY
        replies = await self._send(script, calls, wait)
        # NOSCRIPT: this server has not seen the script (a restart, a failover: scripts are
        # not replicated). Such a call changed nothing, so it is safe to send again.
        for everywhere in (False, True) if self._cluster is not None else (False,):
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if not missing:
                break
            await self._load(script, everywhere=everywhere)
            again = await self._send(script, [calls[i] for i in missing], wait)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _load(self, script: AsyncScript, *, everywhere: bool = False) -> None:
        """Load `script` where a call met NOSCRIPT. On a cluster that is the primary serving
        the pool's slot (redis-py has followed any MOVED, so its slot map names the node
        that answered), or, `everywhere`, every primary: a slot being moved is served by
        the importing node (ASK), which the slot map does not name yet. A primary that
        cannot be reached then is skipped: it serves other pools."""
        cluster = self._cluster
        if cluster is None:
            await self._redis.script_load(script.script)
            return
        await cluster.initialize()
        owner = cluster.get_node_from_key(self._keys.pending)
        assert owner is not None, "get_node_from_key returns a primary or raises"
        if not everywhere:
            await _load_on(cluster, owner, script)
            return
        loads = [_load_on(cluster, node, script) for node in cluster.get_primaries()]
        results = await asyncio.gather(*loads, return_exceptions=True)
        if all(isinstance(result, BaseException) for result in results):
            raise next(r for r in results if isinstance(r, BaseException))

    async def _send(
        self, script: AsyncScript, calls: Sequence[Sequence[str | int | float | bytes]], wait: bool
    ) -> list[Any]:
        """The replies to one EVALSHA of `script` per argument list (an error reply as its
        exception), with WAIT after them when `wait`."""
        key = self._keys.pending
        cluster = self._cluster
        if cluster is not None and wait:
            return await evalsha_then_wait(
                cluster,
                key,
                script.sha,
                [[*self._common, *args] for args in calls],
                self._wait,
                lambda node: _load_on(cluster, node, script),
            )
        if cluster is not None and len(calls) == 1:
            # One call needs no pipeline (a cluster pipeline costs more than a command).
            try:
                return [await cluster.evalsha(script.sha, 1, key, *self._common, *calls[0])]
            except ResponseError as exc:
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.execute_command("EVALSHA", script.sha, 1, key, *self._common, *args)
            if wait:
                pipe.execute_command("WAIT", self._wait.replicas, self._wait.timeout_ms)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        if not wait:
            return replies
        acked = replies.pop()
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < self._wait.replicas and not any(
            isinstance(reply, NoScriptError) for reply in replies
        ):
            raise NotReplicated(int(acked), self._wait, replies)
        return replies


async def _load_on(cluster: RedisCluster, node: ClusterNode, script: AsyncScript) -> None:
    await cluster.execute_command("SCRIPT LOAD", script.script, target_nodes=node)
