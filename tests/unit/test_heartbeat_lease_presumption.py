"""A worker that cannot reach Redis for longer than its lease assumes its leases are gone,
says so once, and keeps its jobs running: fencing, not the worker, decides whether their
reports still count. The first heartbeat that gets through hands over what was revoked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from shared.settings import BrokerSettings
from tests.helpers import wait_until_sync
from worker.heartbeat import HeartbeatThread


class FlakyBroker:
    """Heartbeats fail while `down`; afterwards they answer `revoked`."""

    def __init__(self) -> None:
        self.down = True
        self.revoked: list[str] = ["job-1"]
        self.calls = 0

    async def heartbeat(self, worker_id: str, **kwargs: Any) -> list[str]:
        self.calls += 1
        if self.down:
            raise ConnectionError("Redis is gone")
        return self.revoked


class Link:
    def __init__(self, broker: FlakyBroker) -> None:
        self.broker = broker

    async def aclose(self) -> None:
        return None


@pytest.fixture
def broker() -> FlakyBroker:
    return FlakyBroker()


@pytest.fixture
def revoked() -> list[list[str]]:
    return []


@pytest.fixture
def thread(broker: FlakyBroker, revoked: list[list[str]]) -> Iterator[HeartbeatThread]:
    settings = BrokerSettings(lease_timeout=0.5, heartbeat_interval=0.05)
    running = {"job-1": "7"}
    beat = HeartbeatThread(lambda: Link(broker), "w1", settings, revoked.append, lambda: running)  # type: ignore[arg-type, return-value]
    beat.update(status="busy")
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()


def test_past_the_lease_the_worker_presumes_its_leases_lost_and_says_so_once(
    thread: HeartbeatThread, broker: FlakyBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "worker.heartbeat")
    wait_until_sync(lambda: thread.leases_presumed_lost, timeout=5)
    calls = broker.calls
    wait_until_sync(lambda: broker.calls >= calls + 5, timeout=5)  # it keeps trying
    presumed = [r.getMessage() for r in caplog.records if "leases are gone" in r.getMessage()]
    assert len(presumed) == 1, presumed
    assert "running jobs continue" in presumed[0]


def test_the_first_heartbeat_through_clears_it_and_hands_over_the_revoked_jobs(
    thread: HeartbeatThread, broker: FlakyBroker, revoked: list[list[str]]
) -> None:
    wait_until_sync(lambda: thread.leases_presumed_lost, timeout=5)
    assert revoked == []  # nothing is interrupted while Redis cannot say what was revoked
    broker.down = False
    wait_until_sync(lambda: not thread.leases_presumed_lost, timeout=5)
    wait_until_sync(lambda: revoked, timeout=5)
    assert revoked[0] == ["job-1"]


def test_a_short_outage_presumes_nothing(thread: HeartbeatThread, broker: FlakyBroker) -> None:
    wait_until_sync(lambda: broker.calls >= 2, timeout=5)
    broker.down = False
    wait_until_sync(lambda: thread.last_ok is not None, timeout=5)
    assert not thread.leases_presumed_lost
