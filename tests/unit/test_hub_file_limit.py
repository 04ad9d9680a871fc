"""The hub lifts its open-file limit to what HUB_MAX_CONNECTIONS needs, within the hard limit,
so a full connection table meets the hub's 503 rather than accept() failing with EMFILE."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from hub.cli import raise_file_limit
from hub.settings import HubSettings

resource = pytest.importorskip("resource")


@pytest.fixture
def restored_limit() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def settings(max_connections: int, ws_port: int = 0) -> HubSettings:
    return HubSettings(auth_enabled=False, max_connections=max_connections, ws_port=ws_port)


def test_the_soft_limit_is_raised_for_every_port(restored_limit: tuple[int, int]) -> None:
    _, hard = restored_limit
    if hard != resource.RLIM_INFINITY and hard < 2 * 600 + 256:
        pytest.skip(f"hard open-file limit {hard} is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
    raise_file_limit(settings(600, ws_port=3002))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 2 * 600 + 256


def test_a_hard_limit_too_low_is_a_warning_naming_the_setting(
    restored_limit: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, hard = restored_limit
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-file limit to exceed")
    raise_file_limit(settings(hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HUB_MAX_CONNECTIONS" in w for w in warnings), warnings
