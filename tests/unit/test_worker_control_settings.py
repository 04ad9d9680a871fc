"""WORKER_CONTROL_KEEPALIVE_SECONDS: how long the cancel channel may stay quiet before the
worker pings it (tests/integration/test_worker_control.py shows what the ping is for)."""

from __future__ import annotations

import pytest

from shared.config import ConfigError
from worker.settings import WorkerSettings

BASE = {"REDIS_URL": "redis://127.0.0.1:6399/0", "WORKER_ID": "w1", "SERVICES": "simulation"}


def test_the_keepalive_defaults_to_15_seconds_and_can_be_set() -> None:
    assert WorkerSettings.from_env(BASE).control_keepalive == 15.0
    tuned = WorkerSettings.from_env({**BASE, "WORKER_CONTROL_KEEPALIVE_SECONDS": "2.5"})
    assert tuned.control_keepalive == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "soon", "7200"])
def test_a_bad_keepalive_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env({**BASE, "WORKER_CONTROL_KEEPALIVE_SECONDS": value})
    assert info.value.name == "WORKER_CONTROL_KEEPALIVE_SECONDS"
