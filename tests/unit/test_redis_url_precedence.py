"""Which Redis the hub and the worker use: HUB_REDIS_URL, else REDIS_URL, in both processes.

One rule (shared/redis_settings.py), so a hub and a worker given the same settings always
reach the same Redis. Every case runs against both processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from hub.settings import HubSettings
from shared.config import ConfigError, load_environment
from worker.settings import WorkerSettings

HUB = "redis://hub-redis:6379/0"
GENERIC = "redis://other-software:6379/0"
TOKENS = {"HUB_AUTH_TOKEN": "client-secret-1", "HUB_OPERATOR_TOKEN": "operator-secret-1"}


def hub_url(values: Mapping[str, str]) -> str | None:
    redis = HubSettings.from_env({**TOKENS, **values}).redis
    return None if redis is None else redis.url


def worker_url(values: Mapping[str, str]) -> str | None:
    return WorkerSettings.from_env({"WORKER_ID": "w1", **values}).redis.url


PROCESSES = pytest.mark.parametrize("url_of", [hub_url, worker_url], ids=["hub", "worker"])
UrlOf = Callable[[Mapping[str, str]], str | None]


@PROCESSES
def test_hub_redis_url_alone_is_used(url_of: UrlOf) -> None:
    assert url_of({"HUB_REDIS_URL": HUB}) == HUB


@PROCESSES
def test_redis_url_alone_is_used(url_of: UrlOf) -> None:
    assert url_of({"REDIS_URL": GENERIC}) == GENERIC


@PROCESSES
def test_hub_redis_url_wins_when_both_are_set(url_of: UrlOf) -> None:
    assert url_of({"HUB_REDIS_URL": HUB, "REDIS_URL": GENERIC}) == HUB


@PROCESSES
def test_a_blank_hub_redis_url_counts_as_unset(url_of: UrlOf) -> None:
    assert url_of({"HUB_REDIS_URL": "  ", "REDIS_URL": GENERIC}) == GENERIC


@PROCESSES
def test_hub_redis_url_from_the_env_file_wins_over_redis_url_from_the_environment(
    url_of: UrlOf, tmp_path: Path
) -> None:
    """The environment overrides the file name by name; between the two names HUB_REDIS_URL
    still wins, so a REDIS_URL a platform injects for other software changes nothing."""
    env_file = tmp_path / ".env"
    env_file.write_text(f"HUB_REDIS_URL={HUB}\n")
    assert url_of(load_environment(env_file, {"REDIS_URL": GENERIC})) == HUB


@PROCESSES
@pytest.mark.parametrize("name", ["HUB_REDIS_URL", "REDIS_URL"])
def test_a_url_without_a_redis_scheme_names_its_variable(url_of: UrlOf, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        url_of({name: "hub-redis:6379"})
    assert str(info.value) == f"{name}: must start with redis://, rediss:// or unix://"


@PROCESSES
def test_an_unused_redis_url_is_not_checked(url_of: UrlOf) -> None:
    assert url_of({"HUB_REDIS_URL": HUB, "REDIS_URL": "other-software:6379"}) == HUB


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_every_redis_scheme_is_accepted(scheme: str) -> None:
    url = f"{scheme}://hub-redis/0"
    assert hub_url({"HUB_REDIS_URL": url}) == worker_url({"HUB_REDIS_URL": url}) == url


def test_with_neither_the_hub_runs_its_embedded_redis() -> None:
    assert hub_url({}) is None


def test_with_neither_the_worker_refuses_to_start() -> None:
    with pytest.raises(ConfigError) as info:
        worker_url({})
    assert info.value.name == "HUB_REDIS_URL"
    assert "required" in str(info.value)


def test_worker_detect_needs_no_redis() -> None:
    settings = WorkerSettings.from_env({"WORKER_ID": "w1"}, need_redis=False)
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
