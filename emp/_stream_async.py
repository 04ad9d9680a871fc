"""The event stream for `AsyncClient`: an async iterator over the hub's /ws.

The same loop as emp/_stream_sync.py (connect, subscribe, let the Resumer decide, reconnect
with backoff), on asyncio. The iterator wraps an async generator, so a stream the caller
abandons mid-way is still closed by the event loop's async-generator finaliser.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType

from websockets.asyncio.client import connect

from emp import _ws
from emp._config import Config
from emp._resume import NeedSnapshot, Resumer, Selector
from emp.events import Event
from emp.models import Job


class AsyncEventStream(AsyncIterator[Event]):
    """`async for` over events; `aclose()` it (or use `async with`) when stopping early. A
    one-job stream ends after the job's final event."""

    def __init__(self, events: AsyncGenerator[Event, None]) -> None:
        self._events = events

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def events(
    config: Config, selector: Selector, read_job: Callable[[str], Awaitable[Job | None]]
) -> AsyncGenerator[Event, None]:
    resumer = Resumer(selector)
    failures = 0
    while True:
        try:
            async with connect(
                config.ws_url,
                additional_headers=config.auth_headers(),
                user_agent_header=config.user_agent,
                open_timeout=config.timeout,
                close_timeout=_ws.CLOSE_TIMEOUT,
                max_size=_ws.MAX_MESSAGE,
            ) as ws:
                await ws.send(_ws.encode(resumer.subscribe()))
                async for raw in ws:
                    for action in resumer.feed(_ws.decode(raw)):
                        if isinstance(action, NeedSnapshot):
                            job = await read_job(action.job_id)
                            for snapshot in resumer.snapshot(job, action.job_id):
                                yield snapshot
                        else:
                            yield action
                    if resumer.subscribed:
                        failures = 0
                    if resumer.finished:
                        return
                error: BaseException = ConnectionError("the hub closed the stream")
        except _ws.TRANSIENT as exc:
            if (refused := _ws.refusal(exc)) is not None:
                raise refused from exc
            error = exc
        resumer.disconnected()
        failures += 1
        if failures >= config.retry.attempts:
            raise _ws.gave_up(config, failures, error)
        await asyncio.sleep(config.retry.delay(failures))
