"""The calibration line BENCHMARKS.md carries, measured against a real Redis."""

from __future__ import annotations

from bench.common import machine_speed


def test_machine_speed_measures_a_python_loop_and_redis_round_trips(
    redis_server_url: str,
) -> None:
    text = machine_speed(redis_server_url)
    assert text.startswith("Python loop of 1,000,000 additions ")
    assert " ms; Redis PING round trip p50 " in text
