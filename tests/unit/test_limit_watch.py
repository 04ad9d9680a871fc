"""One timer for every running job's time limit (worker/time_limit.py LimitWatch): each limit
fires at its own deadline whatever the order limits were added in, a dropped limit never
fires, and a watch used again in a new event loop does not count on a timer left in the
old one."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from worker.time_limit import LimitWatch, TimeLimit


class FakeLimit:
    """What the watch reads of a limit: its deadline, and `expire` to call at it."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = asyncio.Event()

    def expire(self) -> None:
        self.expired.set()


def limit_in(seconds: float) -> FakeLimit:
    return FakeLimit(asyncio.get_running_loop().time() + seconds)


def add(watch: LimitWatch, limit: FakeLimit) -> None:
    watch.add(cast("TimeLimit[Any]", limit))


def test_a_later_limit_added_first_does_not_delay_an_earlier_one() -> None:
    async def scenario() -> None:
        watch = LimitWatch()
        late, soon = limit_in(3600), limit_in(0.05)
        add(watch, late)
        add(watch, soon)
        await asyncio.wait_for(soon.expired.wait(), timeout=10)
        assert not late.expired.is_set()

    asyncio.run(scenario())


def test_a_dropped_limit_never_fires_and_the_next_one_still_does() -> None:
    async def scenario() -> None:
        watch = LimitWatch()
        ended, running = limit_in(0.05), limit_in(0.1)
        add(watch, ended)
        add(watch, running)
        watch.discard(cast("TimeLimit[Any]", ended))
        await asyncio.wait_for(running.expired.wait(), timeout=10)
        assert not ended.expired.is_set()

    asyncio.run(scenario())


def test_a_watch_used_again_in_a_new_loop_arms_a_timer_there() -> None:
    watch = LimitWatch()

    async def first() -> None:
        # Armed for a deadline in this loop, which then closes with the timer pending.
        limit = limit_in(0.01)
        add(watch, limit)
        watch.discard(cast("TimeLimit[Any]", limit))

    async def second() -> bool:
        limit = limit_in(0.05)  # later than the first loop's pending timer
        add(watch, limit)
        try:
            await asyncio.wait_for(limit.expired.wait(), timeout=5)
        except TimeoutError:
            return False
        return True

    asyncio.run(first())
    assert asyncio.run(second()), "the limit counted on the closed loop's timer"
