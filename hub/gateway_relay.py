"""This hub's gateway connections, and what Redis tells them: cancels and revocations.

A direct worker subscribes to its own `control:{worker}` channel. A gateway worker has no
Redis connection, so each hub listens once for all of its gateway workers: one pattern
subscription to every worker's control channel (cancels are rare, and a hub drops those of
workers it does not serve), plus `gateway:revoked`, on which a revoked worker's connections
are closed at once. Pub/sub is at-most-once; what it misses, the heartbeat's revoked list
(cancels) and each session's periodic grant check (revocations) catch up on.

It also owns the blocking Redis client that gateway workers' waits for work run on: one
BLPOP per waiting worker, exactly what a direct worker would run itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from shared.broker import Broker
from shared.broker_replies import text
from shared.keys import Keys
from shared.outage import REDIS_OUTAGE
from shared.redis_client import TRANSIENT_ERRORS, sibling
from shared.redis_types import RedisClient
from shared.settings import BrokerSettings

log = logging.getLogger("hub.gateway")

# Blocking waits open at once across this hub's gateway workers; past it, waits queue for a
# connection (and answer "nothing yet" at their timeout), they never fail.
MAX_WAITS = 1024


class GatewayPeer(Protocol):
    worker_id: str

    def push_cancel(self, job_id: str) -> None: ...

    def revoke(self) -> None: ...


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class GatewayRelay:
    def __init__(self, redis: RedisClient, settings: BrokerSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys(settings.prefix)
        self._peers: dict[str, set[GatewayPeer]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._blocking: RedisClient | None = None
        self.waiter: Broker | None = None
        self.listening = asyncio.Event()

    def attach(self, peer: GatewayPeer) -> None:
        self._peers.setdefault(peer.worker_id, set()).add(peer)

    def detach(self, peer: GatewayPeer) -> None:
        peers = self._peers.get(peer.worker_id)
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._peers[peer.worker_id]

    @property
    def connected(self) -> int:
        return sum(len(peers) for peers in self._peers.values())

    def revoke(self, worker_id: str) -> None:
        for peer in list(self._peers.get(worker_id, ())):
            peer.revoke()

    # -- lifecycle ----------------------------------------------------------------------

    def _blocking_client(self, max_connections: int) -> RedisClient:
        return sibling(self._redis, blocking=True, max_connections=max_connections)

    async def start(self) -> None:
        self._blocking = self._blocking_client(MAX_WAITS)
        self.waiter = Broker(self._blocking, self._settings)
        self._listener = asyncio.create_task(self._listen(), name="emp-gateway-relay")

    async def stop(self) -> None:
        for peers in list(self._peers.values()):
            for peer in list(peers):
                peer.revoke()
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._blocking is not None:
            await self._blocking.aclose()
            self._blocking = None

    # -- the listener -------------------------------------------------------------------

    async def _listen(self) -> None:
        keys = self._keys
        control_prefix = keys.control("")
        delay = 0.1
        client = self._blocking_client(1)
        try:
            while True:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.psubscribe(_glob_escape(control_prefix) + "*")
                    await pubsub.subscribe(keys.gateway_revoked)
                    self.listening.set()
                    REDIS_OUTAGE.recovered()
                    delay = 0.1
                    async for message in pubsub.listen():
                        self._dispatch(message, control_prefix)
                except TRANSIENT_ERRORS as exc:
                    self.listening.clear()
                    REDIS_OUTAGE.failed("gateway relay", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                finally:
                    await pubsub.aclose()
        finally:
            await client.aclose()

    def _dispatch(self, message: dict[str, Any], control_prefix: str) -> None:
        channel = text(message.get("channel")) or ""
        data = text(message.get("data")) or ""
        if channel == self._keys.gateway_revoked:
            self.revoke(data)
            return
        worker_id = channel.removeprefix(control_prefix)
        verb, _, job_id = data.partition(" ")
        if verb == "cancel" and job_id:
            for peer in list(self._peers.get(worker_id, ())):
                peer.push_cancel(job_id)
