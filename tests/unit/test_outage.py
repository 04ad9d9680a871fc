"""Redis outages are logged once when they begin and once when they end, never per retry
(shared/outage.py), whichever loops notice and however often they retry."""

from __future__ import annotations

import logging
import threading

import pytest

from shared.outage import Outage


@pytest.fixture
def outage() -> Outage:
    return Outage("Redis", logging.getLogger("test.outage"))


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_many_failures_of_many_loops_make_one_warning_and_one_recovery_line(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "test.outage")
    for _ in range(20):
        outage.failed("heartbeat", ConnectionError("refused"))
        outage.failed("claim", ConnectionError("refused"))
    assert outage.down_for is not None
    outage.recovered()
    outage.recovered()  # nothing more to say
    assert lines(caplog, logging.WARNING) == [
        "Redis unreachable (heartbeat: ConnectionError: refused); retrying with backoff, "
        "one line when it is back"
    ]
    [back] = lines(caplog, logging.INFO)
    assert back.startswith("Redis reachable again after ")
    assert back.endswith("(40 failed attempt(s))")
    assert outage.down_for is None


def test_each_outage_gets_its_own_line(outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "test.outage")
    for _ in range(3):
        outage.failed("claim", TimeoutError())
        outage.failed("claim", TimeoutError())
        outage.recovered()
    assert len(lines(caplog, logging.WARNING)) == 3
    assert len(lines(caplog, logging.INFO)) == 3


def test_threads_failing_at_once_still_log_one_line(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "test.outage")
    start = threading.Barrier(8)

    def fail() -> None:
        start.wait()
        for _ in range(100):
            outage.failed("heartbeat", OSError("reset"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(lines(caplog, logging.WARNING)) == 1
