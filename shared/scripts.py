"""Calls the Lua scripts in `shared/lua/` (assembled by shared/lua_source.py) with the
common arguments.

Where the server has Redis Functions, a call is `FCALL` of the script's function in the
library (`lua_source.library()`), which Redis loads once, helpers and all; a call then runs
only the script's own code (about 20 us less Redis time per claim than sending the script
with EVALSHA, which makes all ~90 helpers it includes on every call). The library is loaded
by the first call that finds it missing ("Function not found": a fresh or restarted Redis,
a FUNCTION FLUSH), and the call is sent again: it ran nothing. Functions are stored,
replicated and failed over with the data, so a promoted replica has them already.

A call falls back to the same code as a script, with `EVALSHA` (a NOSCRIPT answer loads
the script and sends the call again), for EVAL_FALLBACK_SECONDS, where Functions are not
available: a server without them (Redis 6.2, some Redis-compatible servers), a user whose
ACL allows `evalsha` but not `fcall`, or one not allowed to load the library (the worker
ACL in release/README.md must not get `function`: whoever can load a library can replace
this one, and then run code as the hubs). After that time it tries Functions again.

A single call on a plain client goes straight to a pooled connection (`Scripts._direct`):
it is the cost every submit, claim and complete pays. A batch's calls go the same way, each
written as soon as it is made (`Scripts.call_streamed`).

On a Redis Cluster every call goes to the primary serving the pool's slot: the prefix has a
hash tag, so KEYS[1] (`jobs:pending`) and every key a script derives from the prefix share
one slot, and Redis 7 lets a script touch keys it did not declare as long as they are in
the declared key's slot. redis-py routes an FCALL by its KEYS[1] (read from the command's
key specs, without asking a node) and follows MOVED and ASK itself; the two things it
cannot do for us are done here: loading the library or a script where a call found none,
on the node that said so (not on every primary, one of which may be down), and WAIT on the
connection that ran the calls (shared/cluster_scripts.py). Each primary holds the library
once loaded; its replicas get it from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from redis.asyncio.client import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from shared.cluster_scripts import calls_then_wait
from shared.config import ConfigError
from shared.keys import Keys, hash_tag
from shared.lua_source import (
    LIBRARY_PREFIX,
    SCRIPT_NAMES,
    function_name,
    library,
    library_name,
    source,
)
from shared.redis_types import RedisClient
from shared.replication import NotReplicated, Wait
from shared.script_replies import function_missing, functions_refused, not_run
from shared.text import as_text

log = logging.getLogger(__name__)

# Rounds of sending again the calls that ran nothing (Scripts.call_many).
SETTLE_ROUNDS: Final = 5
# How long a Scripts object uses EVALSHA once Functions were found unavailable, before it
# tries them again (a hub may have loaded the library since, or the ACL been widened): one
# failed call a minute where they never will be.
EVAL_FALLBACK_SECONDS: Final = 60.0


def _library_entry_name(entry: Any) -> str:
    """The library name in one entry of FUNCTION LIST: a flat list of names and values as a
    plain client returns it, a mapping once redis-py's cluster client has parsed it."""
    pairs = entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
    return as_text({as_text(name): value for name, value in pairs}["library_name"])


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
        self._functions = {name: function_name(name) for name in SCRIPT_NAMES}
        # Until when calls use EVALSHA because Functions were found unavailable (monotonic
        # seconds; 0: try them).
        self._eval_until = 0.0
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
        # At most a quarter of the pool: a kept connection is one the pool cannot lend to
        # anything else (a pipeline, a read), so a pool of two or three keeps none. A
        # worker's waiting client (four: its waits, the control channel) keeps one for its
        # waits, which then skip the pool's lock and hooks.
        self._kept_max = (
            0 if self._pool is None else min(KEPT_CONNECTIONS, self._pool.max_connections // 4)
        )

    def _command(self, name: str, args: Sequence[str | int | float | bytes]) -> tuple[Any, ...]:
        """The command that runs script `name` with `args`: FCALL of its function, or
        EVALSHA of its text while Functions are unavailable."""
        if time.monotonic() >= self._eval_until:
            return ("FCALL", self._functions[name], 1, self._keys.pending, *self._common, *args)
        sha = self._scripts[name].sha
        return ("EVALSHA", sha, 1, self._keys.pending, *self._common, *args)

    async def call(self, name: str, *args: str | int | float | bytes) -> Any:
        if (self._wait.replicas and name not in READ_ONLY) or self._pool is None:
            return (await self.call_many(name, [args]))[0]
        try:
            return await self._direct(self._command(name, args))
        except ResponseError as exc:
            if not not_run(exc):
                raise
            # The call ran nothing (see not_run), so it is safe to send again once the
            # function or script is there, or with EVALSHA: through call_many, which
            # settles each of those cases.
            await self._settle([exc], name, set())
        return (await self.call_many(name, [args]))[0]

    async def command(self, *args: str | int | float | bytes) -> Any:
        """A plain command, unparsed, on `_direct`'s path: the worker's BLPOP for work,
        made after every job an idle worker finishes, whose redis-py wrapping would cost
        what it costs a script call. Where `_direct` cannot run, redis-py's own path."""
        if self._pool is None:
            return await self._redis.execute_command(*args)
        return await self._direct(args)

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
        order), followed by WAIT when replicas must acknowledge. Raises the first error a
        call met."""
        replies = await self.call_each(name, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def call_each(
        self, name: str, calls: Sequence[Sequence[str | int | float | bytes]]
    ) -> list[Any]:
        """As call_many, but each call's error is its reply, in its place: for calls made on
        behalf of different callers (group commit), each told of its own outcome only."""
        wait = self._wait.replicas > 0 and name not in READ_ONLY
        return await self._run_the_rest(name, calls, await self._send(name, calls, wait), wait)

    async def call_streamed(
        self, name: str, calls: Iterable[Sequence[str | int | float | bytes]]
    ) -> list[Any]:
        """As call_many, for large calls made one by one (Broker.submit_many's batches of
        jobs): each is packed and written as soon as `calls` yields it, and the replies are
        read once all are sent, so Redis runs the first calls while the client makes and
        packs the later ones, and the client reads each reply while Redis runs the calls
        after it. A pipeline sends nothing before the last call is packed and reads nothing
        before the last has run: the client then works while Redis idles, and the other way
        round (batches of 500 jobs, 12 rounds interleaved on the 2-core dev box: median
        23,700 jobs/s that way against 25,700 this way).

        The rest is a pipeline's: one connection, the calls run in order, each error
        reply in its place, WAIT after them when replicas must acknowledge, calls that ran
        nothing settled and sent again, the first error raised. A connection lost on the
        way sends again every call made so far (as redis-py's pipeline would, with the
        connection's retry policy), so a script whose second run would change something
        must not be called this way; submit_batch finds the jobs it wrote the first time.
        A cluster, and a client pinned to one connection, take call_many's path."""
        if self._pool is None:
            return await self.call_many(name, list(calls))
        wait = self._wait.replicas > 0 and name not in READ_ONLY
        made: list[Sequence[str | int | float | bytes]] = []
        replies = await self._stream(name, iter(calls), made, wait)
        replies = await self._run_the_rest(name, made, replies, wait)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _stream(
        self,
        name: str,
        calls: Iterator[Sequence[str | int | float | bytes]],
        made: list[Sequence[str | int | float | bytes]],
        wait: bool,
    ) -> list[Any]:
        """call_streamed's sending and reading, on a kept connection (`_take`); `made`
        collects the calls taken from `calls`, for a retry and for settling."""
        conn = await self._take()

        async def attempt() -> list[Any]:
            for args in made:  # a retry: what was sent on the connection that was lost
                await conn.send_command(*self._command(name, args))
            for args in calls:
                made.append(args)
                await conn.send_command(*self._command(name, args))
            if wait:
                await conn.send_command("WAIT", self._wait.replicas, self._wait.timeout_ms)
            replies: list[Any] = []
            for _ in made:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            if wait:
                replies.append(await conn.read_response())
            return replies

        async def dropped(error: Exception) -> None:
            await conn.disconnect()

        try:
            replies: list[Any] = await conn.retry.call_with_retry(attempt, dropped)
        finally:
            await self._put_back(conn)
        if not wait:
            return replies
        acked = int(replies.pop())
        if acked < self._wait.replicas and not any(not_run(reply) for reply in replies):
            raise NotReplicated(acked, self._wait, replies)
        return replies

    async def _run_the_rest(
        self,
        name: str,
        calls: Sequence[Sequence[str | int | float | bytes]],
        replies: list[Any],
        wait: bool,
    ) -> list[Any]:
        """`replies` to `calls`, where each call that ran nothing (not_run) is sent again
        once that is settled, a few rounds at most: the library loaded where it was
        missing, then on every primary of a cluster (a slot mid-move); or Functions
        refused, then the script loaded the same two ways."""
        loaded: set[str] = set()
        for _ in range(SETTLE_ROUNDS):
            missing = [i for i, reply in enumerate(replies) if not_run(reply)]
            if not missing:
                break
            await self._settle([replies[i] for i in missing], name, loaded)
            again = await self._send(name, [calls[i] for i in missing], wait)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _settle(self, errors: Sequence[object], name: str, loaded: set[str]) -> None:
        """Make the calls that met `errors` (each one not_run) runnable: load the library
        where it is missing, use EVALSHA where Functions are refused, load the script where
        the server said NOSCRIPT (a restart, a failover: scripts are not replicated). On a
        cluster, what was loaded once in this call (`loaded`, updated) and is still missing
        is loaded on every primary next."""
        if any(functions_refused(error) for error in errors):
            self._fall_back(next(e for e in errors if functions_refused(e)))
        elif any(function_missing(error) for error in errors):
            await self._load(None, everywhere="library" in loaded)
            loaded.add("library")
        if any(isinstance(error, NoScriptError) for error in errors):
            await self._load(self._scripts[name], everywhere="script" in loaded)
            loaded.add("script")

    async def _load_library(self, node: ClusterNode | None = None) -> None:
        """Load this version's library (`FUNCTION LOAD`; on a cluster, on `node`). Another
        caller may have loaded it first ("already exists": done); a server or user that
        cannot load it falls back to EVALSHA."""
        try:
            await self._execute(node, "FUNCTION", "LOAD", library())
        except ResponseError as exc:
            if "already exists" in str(exc):
                return
            if not functions_refused(exc):
                raise
            self._fall_back(exc)
            return
        where = "" if node is None else f" on {node.name}"
        log.info("loaded the Lua library %s into Redis%s", library_name(), where)

    async def prune_libraries(self) -> list[str]:
        """Delete the libraries of other versions of this code (`emp_*` but this one's):
        left behind by an upgrade, they would stay in Redis, replicated and saved, for
        good. Returns the names deleted. A process of another version that still runs loads
        its own again on its next call ("Function not found" ran nothing), so this is safe
        during a rolling upgrade too. Nothing to do where Functions cannot be listed or
        deleted (the server or the user cannot). On a cluster, on every primary that
        answers (replicas follow their primaries)."""
        cluster = self._cluster
        if cluster is None:
            deleted = await self._prune_on(None)
        else:
            await cluster.initialize()
            per_node = [self._prune_on(node) for node in cluster.get_primaries()]
            deleted = sorted({name for names in await asyncio.gather(*per_node) for name in names})
        if deleted:
            log.info("deleted the Lua libraries of other versions: %s", ", ".join(deleted))
        return deleted

    async def _prune_on(self, node: ClusterNode | None) -> list[str]:
        """prune_libraries on one server (`node`: a cluster's primary)."""
        try:
            listed = await self._execute(
                node, "FUNCTION", "LIST", "LIBRARYNAME", f"{LIBRARY_PREFIX}*"
            )
            names = [_library_entry_name(entry) for entry in listed]
            old = [name for name in names if name != library_name()]
            for name in old:
                with contextlib.suppress(ResponseError):  # another hub deleted it first
                    await self._execute(node, "FUNCTION", "DELETE", name)
        except (ResponseError, RedisConnectionError) as exc:
            log.info("could not prune old Lua libraries: %s", exc)
            return []
        return old

    def _fall_back(self, error: object) -> None:
        self._eval_until = time.monotonic() + EVAL_FALLBACK_SECONDS
        log.info(
            "Redis Functions unavailable (%s): calling the scripts with EVALSHA for %.0f s",
            error,
            EVAL_FALLBACK_SECONDS,
        )

    async def _load(self, script: AsyncScript | None, *, everywhere: bool = False) -> None:
        """Load `script` (None: the library) where a call met NOSCRIPT ("Function not
        found"). On a cluster that is the primary serving the pool's slot (redis-py has
        followed any MOVED, so its slot map names the node that answered), or,
        `everywhere`, every primary: a slot being moved is served by the importing node
        (ASK), which the slot map does not name yet. A primary that cannot be reached then
        is skipped: it serves other pools."""
        cluster = self._cluster
        if cluster is None:
            await self._load_on(None, script)
            return
        await cluster.initialize()
        owner = cluster.get_node_from_key(self._keys.pending)
        assert owner is not None, "get_node_from_key returns a primary or raises"
        if not everywhere:
            await self._load_on(owner, script)
            return
        loads = [self._load_on(node, script) for node in cluster.get_primaries()]
        results = await asyncio.gather(*loads, return_exceptions=True)
        if all(isinstance(result, BaseException) for result in results):
            raise next(r for r in results if isinstance(r, BaseException))

    async def _load_on(self, node: ClusterNode | None, script: AsyncScript | None) -> None:
        """Load `script` (None: the library) on the server (`node`: that cluster node)."""
        if script is None:
            await self._load_library(node)
        else:
            await self._execute(node, "SCRIPT", "LOAD", script.script)

    async def _execute(self, node: ClusterNode | None, *args: Any) -> Any:
        """One command on the server, or on the cluster node `node`."""
        if node is None:
            return await self._redis.execute_command(*args)
        assert self._cluster is not None
        return await self._cluster.execute_command(*args, target_nodes=node)

    async def _send(
        self, name: str, calls: Sequence[Sequence[str | int | float | bytes]], wait: bool
    ) -> list[Any]:
        """The replies to one call of script `name` per argument list (an error reply as its
        exception), with WAIT after them when `wait`."""
        cluster = self._cluster
        if cluster is not None and wait:
            head = self._command(name, ())[:2]  # FCALL function, or EVALSHA sha
            script = self._scripts[name]

            async def load(node: ClusterNode, error: Exception) -> None:
                await self._load_on(node, script if isinstance(error, NoScriptError) else None)

            return await calls_then_wait(
                cluster,
                self._keys.pending,
                head,
                [[*self._common, *args] for args in calls],
                self._wait,
                load,
            )
        if cluster is not None and len(calls) == 1:
            # One call needs no pipeline (a cluster pipeline costs more than a command).
            try:
                return [await cluster.execute_command(*self._command(name, calls[0]))]
            except ResponseError as exc:
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.execute_command(*self._command(name, args))
            if wait:
                pipe.execute_command("WAIT", self._wait.replicas, self._wait.timeout_ms)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        if not wait:
            return replies
        acked = replies.pop()
        if isinstance(acked, Exception):
            raise acked
        if int(acked) < self._wait.replicas and not any(not_run(reply) for reply in replies):
            raise NotReplicated(int(acked), self._wait, replies)
        return replies


# The commands a script call is sent as; `INFO commandstats` counts each under its own name.
SCRIPT_COMMANDS: Final = ("fcall", "evalsha")


def script_call_stats(commandstats: Mapping[str, Any]) -> tuple[int, float]:
    """(script calls, microseconds Redis spent in them) from `INFO commandstats`, whichever
    form the calls took: what benchmarks and tests count a script call's server cost by."""
    calls, usec = 0, 0.0
    for command in SCRIPT_COMMANDS:
        entry = commandstats.get(f"cmdstat_{command}", {})
        calls += int(entry.get("calls", 0))
        usec += float(entry.get("usec", 0))
    return calls, usec
