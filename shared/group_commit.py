"""Group commit: calls that arrive while a few of their kind are in flight wait for one to
end, then go together in one round trip; a call that finds fewer in flight goes at once, so
latency without load is unchanged, and grouping only happens under load, where it is what a
database's group commit is. Two kinds use it (shared/broker.py):

* a worker's complete-and-claim calls (complete_claim.lua), per worker. A worker with
  several slots finishes short jobs close together, and each finished job costs one script
  call whose fixed part (starting the script, decoding the capabilities, the worker's
  checks) is about as large as completing the job and claiming the next. The group is one
  script call that completes and claims for each exactly as separate calls would have (its
  header says so).
* a process's submissions (submit.lua), such as a hub's concurrent `POST /jobs`. The group
  is one pipeline of submit calls, each its own atomic script with its own reply: what is
  saved is the round trip and the system calls on both sides, per submission.

No task is made for this: the caller whose call finishes hands the lead to the first one
waiting, which sends the group on its own task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

Key = TypeVar("Key", bound=Hashable)
Entry = TypeVar("Entry")
Result = TypeVar("Result")

# Completions per call at most: each is ~0.13 ms of Redis time, so a call stays short
# enough not to hold up other clients' commands.
COMPLETE_MAX_GROUP: Final = 16
# Calls in flight per worker at most. One would leave Redis idle while the worker reads a
# group's replies and runs its jobs, and the worker idle while Redis runs the group; three
# keep both busy, with groups of three or four no-op jobs when ten slots drain a queue
# (the side-by-side drain, 10 slots: 1 in flight 4,700-5,300 jobs/s, 3 in flight
# 5,400-6,100, unlimited (no grouping) 5,300-5,900, with Redis time per job 123, 128-148
# and 143-151 us; 2-core dev box, 2026-12-06).
COMPLETE_IN_FLIGHT: Final = 3
# Submissions per pipeline at most (each ~0.04 ms of Redis time), and submission calls in
# flight per process before the next wait and go together. Eight: a process whose own
# asyncio tasks submit (the broker API, 10 at once) keeps Redis busy, as without grouping
# (interleaved in one run: 3 in flight 12,000 jobs/s, 8 15,000-17,100, no cap 14,600-17,700),
# while a hub under more concurrent requests than that still saves a round trip and its
# system calls per submission (`bench hub` with wrk, 50 clients: 3,112-3,444 submissions/s
# without grouping; 3,930-5,051 with 3 in flight; 3,211-4,082 with 8; 2-core dev box,
# 2026-12-06, a slow day).
SUBMIT_MAX_GROUP: Final = 16
SUBMIT_IN_FLIGHT: Final = 8


class _Lead:
    """What a waiting caller is told when it is to send the next group itself."""


_LEAD: Final = _Lead()


@dataclass
class _Waiting(Generic[Entry, Result]):
    entry: Entry
    future: asyncio.Future[Result | _Lead]


@dataclass
class _Line(Generic[Entry, Result]):
    """The calls for one key: how many are in flight, and those waiting for one to end."""

    in_flight: int = 0
    waiting: list[_Waiting[Entry, Result]] = field(default_factory=list)


class GroupCommit(Generic[Key, Entry, Result]):
    """Sends entries for one key (completions: a worker, its capabilities, its lease cap;
    submissions: None, one line for the process) at most `in_flight` calls at a time,
    grouping those that arrive while that many are in flight (at most `max_group` per call).
    `send(key, entries)` makes the call and returns one result per entry, in order."""

    def __init__(
        self,
        send: Callable[[Key, list[Entry]], Awaitable[list[Result]]],
        *,
        max_group: int,
        in_flight: int,
    ) -> None:
        self._send = send
        self._max = max_group
        self._window = in_flight
        self._lines: dict[Key, _Line[Entry, Result]] = {}

    async def call(self, key: Key, entry: Entry) -> Result:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        if line.in_flight < self._window:
            line.in_flight += 1
            return await self._lead(key, line, [entry], [])
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
        # The lead: the group is this entry and those waiting behind it.
        others = line.waiting[: self._max - 1]
        del line.waiting[: self._max - 1]
        return await self._lead(key, line, [entry, *(w.entry for w in others)], others)

    async def _lead(
        self,
        key: Key,
        line: _Line[Entry, Result],
        entries: list[Entry],
        others: list[_Waiting[Entry, Result]],
    ) -> Result:
        """Send `entries` (this caller's first, then `others`'), answer the others, and hand
        the lead on whatever happens."""
        try:
            results = await self._send(key, entries)
            if len(results) != len(entries):
                raise RuntimeError(f"{len(results)} results for {len(entries)} entries")
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
        for waiting, result in zip(others, results[1:], strict=False):
            if not waiting.future.done():
                waiting.future.set_result(result)
        return results[0]

    def _hand_on(self, key: Key, line: _Line[Entry, Result]) -> None:
        """A call in flight is over: the first waiting caller sends the next group."""
        while line.waiting:
            first = line.waiting.pop(0)
            if not first.future.done():  # else cancelled while waiting
                first.future.set_result(_LEAD)
                return
        line.in_flight -= 1
        if not line.in_flight:
            del self._lines[key]
