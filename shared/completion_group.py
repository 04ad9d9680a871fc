"""Group commit for a worker's complete-and-claim calls (complete_claim.lua).

A worker with several slots finishes short jobs close together, and each finished job costs
one script call: the call's fixed part (starting the script, decoding the capabilities,
the worker's checks) is about as large as completing the job and claiming the next. Calls
for one worker that arrive while one of its calls is in flight therefore wait for it and
then go together, in order, in one call; the script completes and claims for each exactly
as separate calls would have (its header says so). A call that finds none in flight goes at
once, so an idle worker's latency is unchanged: grouping only happens under load, where it
is what a database's group commit is.

No task is made for this: the caller whose call finishes hands the lead to the first one
waiting, which sends the group on its own task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

Entry = TypeVar("Entry")
Result = TypeVar("Result")

# Completions per call at most: each is ~0.15 ms of Redis time, so a call stays short
# enough not to hold up other clients' commands.
MAX_GROUP: Final = 16


class _Lead:
    """What a waiting caller is told when it is to send the next group itself."""


_LEAD: Final = _Lead()


@dataclass
class _Waiting(Generic[Entry, Result]):
    entry: Entry
    future: asyncio.Future[Result | _Lead]


@dataclass
class _Line(Generic[Entry, Result]):
    """The calls for one key: whether one is in flight, and those waiting for it."""

    busy: bool = False
    waiting: list[_Waiting[Entry, Result]] = field(default_factory=list)


class CompletionGroup(Generic[Entry, Result]):
    """Sends entries for one key (a worker, its capabilities, its lease cap) one call at a
    time, grouping those that arrive while a call is in flight. `send(key, entries)` makes
    the call and returns one result per entry, in order."""

    def __init__(
        self, send: Callable[[Hashable, list[Entry]], Awaitable[list[Result]]], max_group: int
    ) -> None:
        self._send = send
        self._max = max_group
        self._lines: dict[Hashable, _Line[Entry, Result]] = {}

    async def call(self, key: Hashable, entry: Entry) -> Result:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        if not line.busy:
            line.busy = True
            return await self._lead(key, line, [entry], None)
        mine: _Waiting[Entry, Result] = _Waiting(entry, asyncio.get_running_loop().create_future())
        line.waiting.append(mine)
        try:
            got = await mine.future
        except asyncio.CancelledError:
            if mine.future.cancelled():
                # Still waiting, it goes in no group; already sent in one, its answer is lost
                # as a lost reply is (a claim in it is handed back by the heartbeat).
                if mine in line.waiting:
                    line.waiting.remove(mine)
            elif mine.future.exception() is None and mine.future.result() is _LEAD:
                # Cancelled just after being given the lead: pass it on, or nobody sends.
                self._hand_on(key, line)
            raise
        if not isinstance(got, _Lead):
            return got
        # The lead: this entry is the first waiting; the group is it and those behind it.
        group = line.waiting[: self._max]
        del line.waiting[: self._max]
        assert group[0] is mine
        return await self._lead(key, line, [w.entry for w in group], group[1:])

    async def _lead(
        self,
        key: Hashable,
        line: _Line[Entry, Result],
        entries: list[Entry],
        others: list[_Waiting[Entry, Result]] | None,
    ) -> Result:
        """Send `entries` (this caller's first, then `others`'), answer the others, and hand
        the lead on whatever happens."""
        others = others or []
        try:
            results = await self._send(key, entries)
        except BaseException as exc:
            # The others retry on their own (the worker's delivery loop does): a completion
            # sent twice is fenced, and a claim whose reply was lost is handed back by the
            # heartbeat. A cancelled call is, for them, a call whose reply was lost.
            error = (
                exc
                if isinstance(exc, Exception)
                else RedisConnectionError("the call carrying this completion was cancelled")
            )
            for waiting in others:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            raise
        finally:
            self._hand_on(key, line)
        for waiting, result in zip(others, results[1:], strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)
        return results[0]

    def _hand_on(self, key: Hashable, line: _Line[Entry, Result]) -> None:
        """The call in flight is over: the first waiting caller sends the next group."""
        while line.waiting:
            first = line.waiting[0]
            if not first.future.done():
                first.future.set_result(_LEAD)
                return
            line.waiting.pop(0)  # cancelled while waiting
        line.busy = False
        del self._lines[key]
