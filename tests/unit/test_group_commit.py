"""GroupCommit (shared/group_commit.py), the group commit of complete-and-claim calls:
one call in flight per key; calls made meanwhile wait and go together, in order, capped;
cancelled and failed calls never leave the line stuck nor lose another caller's answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.group_commit import GroupCommit


class Sender:
    """A send whose calls finish when the test says so (`finish`, or `release` for every
    call from then on); it records each group it sent."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, list[str]]] = []
        self.release = asyncio.Event()
        self._finished: list[asyncio.Event] = []
        self.fail: BaseException | None = None

    async def __call__(self, key: str, entries: list[str]) -> list[str]:
        self.groups.append((key, list(entries)))
        mine = asyncio.Event()
        self._finished.append(mine)
        released = asyncio.ensure_future(self.release.wait())
        try:
            await asyncio.wait(
                [released, asyncio.ensure_future(mine.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            released.cancel()
        if self.fail is not None:
            raise self.fail
        return [f"{e}!" for e in entries]

    def finish(self, call: int) -> None:
        self._finished[call].set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_call_with_none_in_flight_is_sent_at_once_and_alone() -> None:
    send = Sender()
    send.release.set()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    assert await group.call("w", "a") == "a!"
    assert await group.call("w", "b") == "b!"
    assert send.groups == [("w", ["a"]), ("w", ["b"])]


async def test_calls_made_while_one_is_in_flight_go_together_in_order() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    calls = [asyncio.create_task(group.call("w", e)) for e in "abcd"]
    await settle()
    assert send.groups == [("w", ["a"])]  # b, c, d wait for it
    send.release.set()
    assert await asyncio.gather(*calls) == ["a!", "b!", "c!", "d!"]
    assert send.groups == [("w", ["a"]), ("w", ["b", "c", "d"])]


async def test_keys_do_not_wait_for_each_other() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    calls = [asyncio.create_task(group.call(k, k)) for k in ("w1", "w2")]
    await settle()
    assert send.groups == [("w1", ["w1"]), ("w2", ["w2"])]
    send.release.set()
    await asyncio.gather(*calls)


async def test_a_group_is_capped_and_the_rest_goes_next() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=2, in_flight=1)
    calls = [asyncio.create_task(group.call("w", e)) for e in "abcde"]
    await settle()
    send.release.set()
    assert await asyncio.gather(*calls) == ["a!", "b!", "c!", "d!", "e!"]
    assert [entries for _, entries in send.groups] == [["a"], ["b", "c"], ["d", "e"]]


async def test_a_failed_call_fails_every_caller_in_it_and_the_next_call_goes() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    first = asyncio.create_task(group.call("w", "a"))
    await settle()
    rest = [asyncio.create_task(group.call("w", e)) for e in "bc"]
    await settle()
    send.fail = RedisConnectionError("lost")
    send.release.set()
    for task in (first, *rest):
        with pytest.raises(RedisConnectionError, match="lost"):
            await task
    send.fail = None
    assert await group.call("w", "d") == "d!"


async def test_a_caller_cancelled_while_waiting_is_left_out_of_the_group() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    first = asyncio.create_task(group.call("w", "a"))
    await settle()
    gone = asyncio.create_task(group.call("w", "b"))
    kept = asyncio.create_task(group.call("w", "c"))
    await settle()
    gone.cancel()
    send.release.set()
    assert await first == "a!"
    assert await kept == "c!"
    assert gone.cancelled()
    assert [entries for _, entries in send.groups] == [["a"], ["c"]]


class CancelsTheNextLead(GroupCommit[str, str, str]):
    """Cancels `victim` the moment the first call in flight hands the lead to it, before
    its task has run again: the narrowest window there is."""

    victim: asyncio.Task[str] | None = None

    def _hand_on(self, key: str, line: Any) -> None:
        super()._hand_on(key, line)
        if self.victim is not None:
            self.victim.cancel()
            self.victim = None


async def test_a_caller_cancelled_as_it_was_given_the_lead_passes_it_on() -> None:
    send = Sender()
    group = CancelsTheNextLead(send, max_group=1, in_flight=1)
    first = asyncio.create_task(group.call("w", "a"))
    await settle()
    lead = asyncio.create_task(group.call("w", "b"))
    after = asyncio.create_task(group.call("w", "c"))
    await settle()
    group.victim = lead
    send.release.set()
    assert await first == "a!"
    assert await asyncio.wait_for(after, 5) == "c!"
    assert lead.cancelled()
    assert [entries for _, entries in send.groups] == [["a"], ["c"]]


async def test_when_the_sender_is_cancelled_the_others_in_its_group_may_retry() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=1)
    first = asyncio.create_task(group.call("w", "a"))
    await settle()
    sender = asyncio.create_task(group.call("w", "b"))
    other = asyncio.create_task(group.call("w", "c"))
    await settle()
    send.finish(0)
    await first
    await settle()  # "b" now sends the group [b, c] and waits for its reply
    assert [entries for _, entries in send.groups][-1] == ["b", "c"]
    sender.cancel()
    # A cancelled call is, for "c", a call whose reply was lost: a transient error.
    with pytest.raises(RedisConnectionError, match="cancelled"):
        await other
    send.release.set()
    assert await group.call("w", "d") == "d!"


async def test_up_to_in_flight_calls_go_at_once_and_the_rest_waits_for_one_to_end() -> None:
    send = Sender()
    group: GroupCommit[str, str, str] = GroupCommit(send, max_group=16, in_flight=2)
    calls = [asyncio.create_task(group.call("w", e)) for e in "abcde"]
    await settle()
    assert [entries for _, entries in send.groups] == [["a"], ["b"]]
    send.finish(1)
    await settle()
    # "b" ended: the three waiting go together, while "a" is still in flight.
    assert [entries for _, entries in send.groups] == [["a"], ["b"], ["c", "d", "e"]]
    assert not calls[0].done()
    send.release.set()
    assert await asyncio.gather(*calls) == ["a!", "b!", "c!", "d!", "e!"]


async def test_a_call_answered_with_too_few_results_fails_every_caller_in_it() -> None:
    async def short(key: str, entries: list[str]) -> list[str]:
        await asyncio.sleep(0)
        return entries[:1]

    group: GroupCommit[str, str, str] = GroupCommit(short, max_group=16, in_flight=1)
    calls = [asyncio.create_task(group.call("w", e)) for e in "abc"]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert results[0] == "a"
    assert all(isinstance(r, RuntimeError) for r in results[1:])
