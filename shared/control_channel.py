"""A worker's control channel, from the listening side.

cancel.lua and reap.lua PUBLISH "cancel <jobId>" on `control:{workerId}` when a job its
worker holds is cancelled or taken away. The worker's listener (worker/control.py) keeps the
subscription alive across dead links; this module is the subscription itself, so the channel
name and its commands stay next to the scripts that publish on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from shared.redis_types import RedisClient
from shared.text import as_text


class ControlSubscription:
    """One subscription on one connection; after `aclose()` make a new one to resubscribe.
    A worker serving several pools listens on its channel in each (`more`)."""

    def __init__(self, redis: RedisClient, channel: str, *more: str) -> None:
        # On a Redis Cluster PUBLISH reaches every node, so one SUBSCRIBE on any node hears
        # every channel, of every pool; redis-py's ClusterPubSub picks the node serving the
        # first channel's slot.
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._channels = (channel, *more)

    async def subscribe(self) -> None:
        await self._pubsub.subscribe(*self._channels)

    async def ping(self) -> None:
        """Ask for a pong: it arrives through `messages()` and proves the link alive."""
        await self._pubsub.ping()

    async def messages(self) -> AsyncIterator[str | None]:
        """Everything the connection receives: a published message as text, None for
        anything else (a pong). Blocks with no timeout of its own."""
        async for message in self._pubsub.listen():
            yield as_text(message.get("data")) if message.get("type") == "message" else None

    async def aclose(self) -> None:
        await self._pubsub.aclose()
