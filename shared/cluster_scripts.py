"""Script calls on a Redis Cluster that redis-py's cluster client cannot make for us.

**WAIT on the right connection.** `WAIT n ms` counts the replicas that acknowledged the
*calling connection's* last write (shared/replication.py), so it must follow the scripts on
the connection that ran them, on the primary that serves the pool's slot. redis-py's
cluster client treats WAIT as a keyless command: it sends it to some node of its choosing,
on some connection of that node, which acknowledges nothing we wrote. `calls_then_wait`
sends the script calls (FCALL, or EVALSHA) and the WAIT in one pipeline on one connection
of the slot's primary, and follows the cluster's redirects itself:

- MOVED (the slot has another primary now: a failover or a finished slot move): the script
  did not run; the slot map is patched and the call sent to the new primary.
- ASK (the slot is being moved and its keys are on the importing node already): the call is
  sent there once, each call after an ASKING on the same connection.
- TRYAGAIN, CLUSTERDOWN (a move or a failover in progress): the call did not run; it is
  sent again after a short pause.
- NOSCRIPT or "Function not found" (a restart without persistence, a slot moved to a
  node that never ran the code; scripts are not replicated either): the script or the
  library is loaded on the node that answered, and the call sent again.
- Another reply that says the call ran nothing (shared/script_replies.py: Functions
  refused to this user) is returned as it is, for the caller to send some other way.

None of those replies means a script ran, so sending the call again never runs it twice. Nor
does a node that cannot be reached (the call is sent again, a few times, to whichever node
a fresh slot map names: a failover). A connection that breaks after the call was sent
leaves unknown whether it ran: that error is raised, and callers treat it as "Redis
unreachable for a moment", as they do with a single server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.replication import NotReplicated, Wait
from shared.script_replies import code_missing, not_run

Arg = str | int | float | bytes

# Redirects and pauses one call may go through before it gives up: what redis-py allows a
# command (RedisCluster.RedisClusterRequestTTL).
ATTEMPTS: Final = 16
PAUSE: Final = 0.05  # seconds before sending again after TRYAGAIN or CLUSTERDOWN
# A node that cannot be reached: tried again this often, after a fresh slot map and a pause
# growing from BACKOFF_BASE to BACKOFF_CAP seconds (shared.redis_client's retry policy).
RETRIES: Final = 3
BACKOFF_BASE: Final = 0.05
BACKOFF_CAP: Final = 2.0
_REDIRECTED: Final = (MovedError, AskError, TryAgainError, ClusterDownError)
_UNREACHABLE: Final = (RedisConnectionError, RedisTimeoutError, OSError)


async def calls_then_wait(
    cluster: RedisCluster,
    key: str,
    head: Sequence[Arg],
    calls: Sequence[Sequence[Arg]],
    wait: Wait,
    load: Callable[[ClusterNode, Exception], Awaitable[None]],
) -> list[Any]:
    """`*head 1 key *args` (`FCALL function` or `EVALSHA sha`) for each of `calls`, in order,
    on the primary serving `key`'s slot, each batch followed by WAIT on the same
    connection. Returns the replies (an error reply as its exception, not raised); raises
    NotReplicated when a batch that ran was acknowledged by fewer than `wait.replicas`
    replies. `load(node, error)` loads the script or library on a node that answered that
    it has none; other replies that say a call ran nothing (script_replies.not_run) are
    returned, and do not count as run for WAIT."""

    def unanswered(reply: object) -> bool:
        return isinstance(reply, _REDIRECTED) or not_run(reply)

    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    acked = wait.replicas
    ask: ClusterNode | None = None
    unreachable = 0
    for _ in range(ATTEMPTS):
        node = ask or await _slot_primary(cluster, key)
        sent = [PipelineCommand(i, *head, 1, key, *calls[i]) for i in todo]
        waited = PipelineCommand(-1, "WAIT", wait.replicas, wait.timeout_ms)
        pipeline = [waited]
        for command in reversed(sent):
            # ASKING lets the importing node serve the one command that follows it.
            pipeline[:0] = [PipelineCommand(-1, "ASKING"), command] if ask else [command]
        ask = None
        try:
            await node.execute_pipeline(pipeline)
        except _UNREACHABLE as exc:
            broken: Exception | None = exc  # not connected, or not sent: no answers
            answered = False
        else:
            broken = next((c.result for c in pipeline if isinstance(c.result, _UNREACHABLE)), None)
            answered = any(
                not unanswered(c.result) and not isinstance(c.result, _UNREACHABLE) for c in sent
            )
        if broken is not None:
            # The node cannot be reached, or the connection broke: a dead primary's slots
            # have another one after a failover, which a fresh slot map names. Calls
            # without an answer are sent again, as redis-py sends a single server's
            # pipeline again (the scripts are written to be run again: fencing tokens,
            # idempotent submission). Calls that were answered are not: whether their
            # changes reached the replicas is unknown, and the error says so.
            await _refresh(cluster)
            unreachable += 1
            if unreachable > RETRIES or answered:
                raise broken
            await asyncio.sleep(min(BACKOFF_CAP, BACKOFF_BASE * 2**unreachable))
            continue
        ran = [c for c in sent if not unanswered(c.result)]
        for command in sent:
            replies[command.position] = command.result
        if ran:
            if isinstance(waited.result, Exception):
                raise waited.result
            acked = min(acked, int(waited.result))
        todo = [c.position for c in sent if unanswered(c.result)]
        if not todo:
            break
        # Every call left has the same slot and the same script: the first one's reply
        # says what to do for all of them.
        first = next(c.result for c in sent if c.position == todo[0])
        if isinstance(first, MovedError):  # before AskError: a MovedError is one too
            await cluster.nodes_manager.move_slot(first)
        elif isinstance(first, AskError):
            ask = await _node_at(cluster, first)
        elif code_missing(first):
            await load(node, first)
        elif not isinstance(first, _REDIRECTED):
            break  # Functions refused: the caller sends these some other way
        else:  # TRYAGAIN, CLUSTERDOWN
            if isinstance(first, ClusterDownError):
                await _refresh(cluster)
            await asyncio.sleep(PAUSE)
    else:
        raise RedisConnectionError(
            f"the slot of {key!r} kept moving: no answer after {ATTEMPTS} redirects"
        )
    if acked < wait.replicas:
        raise NotReplicated(acked, wait, replies)
    return replies


async def _slot_primary(cluster: RedisCluster, key: str) -> ClusterNode:
    await cluster.initialize()  # at once unless the client has no slot map yet
    node = cluster.get_node_from_key(key)
    assert node is not None, "get_node_from_key returns a primary or raises"
    return node


async def _node_at(cluster: RedisCluster, redirect: AskError) -> ClusterNode:
    """The node an ASK names; one the slot map does not know yet is learnt first."""
    node = cluster.get_node(host=redirect.host, port=redirect.port)
    if node is None:
        await _refresh(cluster)
        node = cluster.get_node(host=redirect.host, port=redirect.port)
    if node is None:
        raise RedisConnectionError(f"ASK names {redirect.host}:{redirect.port}, not a node")
    return node


async def _refresh(cluster: RedisCluster) -> None:
    """Read the slot map again (a failover, a node gone). Failing to is not this call's
    error: the one that made it ask is raised, and the next call tries again."""
    with contextlib.suppress(RedisError):
        await cluster.nodes_manager.initialize()
