"""Listens on the worker's control channel for "cancel <jobId>" signals.

Pub/sub is at-most-once: a signal sent while this listener is reconnecting is lost. That is
fine because it is only the fast path: the heartbeat reports revoked jobs and every
progress report is fenced, so a cancelled job is interrupted within one heartbeat anyway.

A subscription is silent by nature, so a connection that died without a reset (a NAT or
firewall that forgot it) looks just like a quiet channel. A watchdog beside the reader pings
when nothing was heard for `keepalive` seconds and, when no pong came back within
`pong_deadline`, drops the connection and subscribes on a fresh one. The reader itself only
ever blocks on a plain read with no timeout of its own, so cancelling it (on a dead link or
at shutdown) is reliable; a read inside redis-py's own timeout is not, on Python 3.11.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from shared.control_channel import ControlSubscription
from shared.outage import REDIS_OUTAGE
from shared.redis_client import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)
CLOSE_TIMEOUT = 2.0  # seconds for a subscription's connection to close


class SilentLink(ConnectionError):
    """The control connection stopped answering pings."""


class ControlListener:
    def __init__(
        self,
        subscription: Callable[[], ControlSubscription],
        on_cancel: Callable[[str], None],
        *,
        keepalive: float = 15.0,
        pong_deadline: float = 5.0,
    ) -> None:
        self._subscription = subscription  # a fresh one per (re)subscription
        self._on_cancel = on_cancel
        self._keepalive = keepalive
        self._pong_deadline = pong_deadline
        self._heard = 0.0
        self.subscriptions = 0  # how many times the channel was (re)subscribed
        self.pings = 0

    async def run(self) -> None:
        delay = 0.5
        while True:
            channel = self._subscription()
            try:
                await channel.subscribe()
                REDIS_OUTAGE.recovered()
                self.subscriptions += 1
                delay = 0.5
                await self._watch(channel)
            except TRANSIENT_ERRORS as exc:
                REDIS_OUTAGE.failed("control channel", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                # Bounded: redis-py's pub/sub close can hang on Python 3.11, and a shutdown
                # must not wait on it; an unclosed connection dies with the process.
                with contextlib.suppress(TimeoutError, *TRANSIENT_ERRORS):
                    await asyncio.wait_for(channel.aclose(), CLOSE_TIMEOUT)

    async def _watch(self, channel: ControlSubscription) -> None:
        """Run the reader; return or raise when it ends, raise SilentLink when a ping goes
        unanswered."""
        self._heard = time.monotonic()
        reader = asyncio.create_task(self._read(channel), name="control-reader")
        try:
            while True:
                quiet = time.monotonic() - self._heard
                if quiet >= self._keepalive:
                    pinged = time.monotonic()
                    await channel.ping()
                    self.pings += 1
                    await asyncio.wait({reader}, timeout=self._pong_deadline)
                    if not reader.done() and self._heard < pinged:
                        raise SilentLink(f"no pong within {self._pong_deadline:g} s")
                else:
                    await asyncio.wait({reader}, timeout=self._keepalive - quiet)
                if reader.done():
                    reader.result()  # the reader's error, if any
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, channel: ControlSubscription) -> None:
        async for text in channel.messages():
            self._heard = time.monotonic()
            if text is not None:
                self._handle(text)

    def _handle(self, text: str) -> None:
        command, _, job_id = text.partition(" ")
        if command == "cancel" and job_id:
            self._on_cancel(job_id)
        else:
            logger.warning("unknown control message %r", text[:100])
