"""Listens on the worker's control channel for "cancel <jobId>" signals.

Pub/sub is at-most-once: a signal sent while this listener is reconnecting is lost. That is
fine because it is only the fast path: the heartbeat reports revoked jobs and every
progress report is fenced, so a cancelled job is interrupted within one heartbeat anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from shared.redis_client import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)


class ControlListener:
    def __init__(self, redis: Redis, channel: str, on_cancel: Callable[[str], None]) -> None:
        self._redis = redis
        self._channel = channel
        self._on_cancel = on_cancel

    async def run(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                delay = 0.5
                async for message in pubsub.listen():
                    self._handle(message.get("data"))
            except TRANSIENT_ERRORS as exc:
                logger.warning("control channel lost (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped upstream

    def _handle(self, data: object) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        command, _, job_id = text.partition(" ")
        if command == "cancel" and job_id:
            self._on_cancel(job_id)
        else:
            logger.warning("unknown control message %r", text[:100])
