"""Listens on the worker's control channel for "cancel <jobId>" signals.

Pub/sub is at-most-once: a signal sent while this listener is reconnecting is lost. That is
fine because it is only the fast path: the heartbeat reports revoked jobs and every
progress report is fenced, so a cancelled job is interrupted within one heartbeat anyway.

A subscription is silent by nature, so a connection that died without a reset would look
just like a quiet channel: the listener pings when nothing arrived for a while and
resubscribes on a fresh connection when the pong does not come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shared.redis_client import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

POLL = 1.0  # seconds per read; also how fast stop() is noticed
KEEPALIVE = 15.0  # ping after this long without traffic
PONG_DEADLINE = 10.0  # ... and give the connection up when no pong came within this


class SilentLink(ConnectionError):
    """The control connection stopped answering pings."""


class ControlListener:
    def __init__(self, redis: Redis, channel: str, on_cancel: Callable[[str], None]) -> None:
        self._redis = redis
        self._channel = channel
        self._on_cancel = on_cancel
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish within one POLL. Preferred over cancelling the task: cancelling a read that
        runs inside redis-py's own timeout is unreliable on Python 3.11."""
        self._stopping.set()

    async def run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                delay = 0.5
                await self._listen(pubsub)
            except TRANSIENT_ERRORS as exc:
                logger.warning("control channel lost (%s); resubscribing in %.1fs", exc, delay)
                await self._pause(delay)
                delay = min(delay * 2, 10.0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped upstream

    async def _listen(self, pubsub: PubSub) -> None:
        heard = time.monotonic()
        pinged: float | None = None
        while not self._stopping.is_set():
            message = await pubsub.get_message(timeout=POLL)
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, None
                if message.get("type") == "message":
                    self._handle(message.get("data"))
                continue
            if pinged is not None and now - pinged > PONG_DEADLINE:
                raise SilentLink("no pong from Redis")
            if pinged is None and now - heard > KEEPALIVE:
                await pubsub.ping()
                pinged = now

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _handle(self, data: object) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        command, _, job_id = text.partition(" ")
        if command == "cancel" and job_id:
            self._on_cancel(job_id)
        else:
            logger.warning("unknown control message %r", text[:100])
