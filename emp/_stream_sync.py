"""The event stream for `Client`: a blocking iterator over the hub's /ws.

The loop connects, subscribes, and hands every message to the Resumer, which decides what
to yield; on a dropped connection it reconnects with backoff and subscribes again, and the
Resumer makes the stream continue where it was (emp/_resume.py). It gives up after the
retry policy's number of failed tries in a row (a subscription in place resets the count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from types import TracebackType

from websockets.sync.client import connect

from emp import _ws
from emp._config import Config
from emp._resume import NeedSnapshot, Resumer, Selector
from emp.events import Event
from emp.models import Job


class EventStream(Iterator[Event]):
    """Iterate for events; close it (or use `with`) when stopping early. A one-job stream
    ends after the job's final event."""

    def __init__(self, events: Generator[Event, None, None]) -> None:
        self._events = events

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def events(
    config: Config, selector: Selector, read_job: Callable[[str], Job | None]
) -> Generator[Event, None, None]:
    resumer = Resumer(selector)
    failures = 0
    while True:
        try:
            with connect(
                config.ws_url,
                additional_headers=config.auth_headers(),
                user_agent_header=config.user_agent,
                open_timeout=config.timeout,
                close_timeout=_ws.CLOSE_TIMEOUT,
                max_size=_ws.MAX_MESSAGE,
            ) as ws:
                ws.send(_ws.encode(resumer.subscribe()))
                for raw in ws:
                    for action in resumer.feed(_ws.decode(raw)):
                        if isinstance(action, NeedSnapshot):
                            yield from resumer.snapshot(read_job(action.job_id), action.job_id)
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
        time.sleep(config.retry.delay(failures))
