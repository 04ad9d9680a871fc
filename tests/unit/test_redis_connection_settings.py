"""TLS, Sentinel and Cluster settings (shared/redis_settings.py): parsed the same by hub and worker,
and every value or combination that cannot work stops the process with one line naming the
setting. Every case runs against both processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from hub.settings import HubSettings
from shared.config import ConfigError
from shared.redis_client import connect_server
from shared.redis_settings import RedisSettings
from worker.settings import WorkerSettings

TOKENS = {"HUB_AUTH_TOKEN": "client-secret-1", "HUB_OPERATOR_TOKEN": "operator-secret-1"}
SENTINEL = {"REDIS_SENTINELS": "s1:26379,s2:26380,[::1]", "REDIS_SENTINEL_MASTER": "emp"}
CLUSTER = {"REDIS_CLUSTER": "true"}


def hub(values: Mapping[str, str]) -> RedisSettings | None:
    return HubSettings.from_env({**TOKENS, **values}).redis


def worker(values: Mapping[str, str]) -> RedisSettings | None:
    return WorkerSettings.from_env({"WORKER_ID": "w1", **values}).redis


PROCESSES = pytest.mark.parametrize("redis_of", [hub, worker], ids=["hub", "worker"])
RedisOf = Callable[[Mapping[str, str]], RedisSettings | None]


def refusal(redis_of: RedisOf, values: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        redis_of(values)
    return str(info.value)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


@PROCESSES
def test_sentinel_needs_no_url_and_defaults_the_port(redis_of: RedisOf) -> None:
    redis = redis_of(SENTINEL)
    assert redis is not None
    assert redis.url is None
    assert redis.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26379))
    assert redis.sentinel_master == "emp"


@PROCESSES
def test_with_sentinel_the_url_gives_scheme_and_credentials(redis_of: RedisOf) -> None:
    redis = redis_of(
        {**SENTINEL, "HUB_REDIS_URL": "rediss://u:p@ignored/2", "REDIS_SENTINEL_PASSWORD": "sp"}
    )
    assert redis is not None
    assert redis.tls
    assert redis.sentinel_password == "sp"
    assert "sp" not in repr(redis)
    assert "u:p" not in repr(redis)
    assert redis.describe() == (
        "the primary of Sentinel master 'emp' at s1:26379,s2:26380,[::1]:26379 over TLS"
    )


@PROCESSES
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINEL_MASTER: required when REDIS_SENTINELS is set"),
        (
            {"HUB_REDIS_URL": "redis://h/0", "REDIS_SENTINEL_MASTER": "emp"},
            "REDIS_SENTINEL_MASTER: only applies with REDIS_SENTINELS",
        ),
        (
            {"HUB_REDIS_URL": "redis://h/0", "REDIS_SENTINEL_PASSWORD": "x"},
            "REDIS_SENTINEL_PASSWORD: only applies with REDIS_SENTINELS",
        ),
        (
            {**SENTINEL, "REDIS_SENTINELS": "s1:0"},
            "REDIS_SENTINELS: 's1:0': the port must be 1-65535",
        ),
        ({**SENTINEL, "REDIS_SENTINELS": "s1:x"}, "REDIS_SENTINELS: 's1:x' is not host:port"),
        (
            {**SENTINEL, "REDIS_URL": "unix:///run/redis.sock"},
            "REDIS_URL: unix:// cannot be used with REDIS_SENTINELS",
        ),
        (
            {"HUB_REDIS_URL": "rediss://h/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "REDIS_TLS_CA_FILE: no such file: /nonexistent/ca.pem",
        ),
        (
            {"HUB_REDIS_URL": "redis://h/0", "REDIS_TLS_VERIFY_HOSTNAME": "maybe"},
            "REDIS_TLS_VERIFY_HOSTNAME: expected true or false, got 'maybe'",
        ),
        ({**SENTINEL, **CLUSTER}, "REDIS_CLUSTER: cannot be used with REDIS_SENTINELS"),
        (
            {**CLUSTER, "HUB_REDIS_URL": "unix:///run/redis.sock"},
            "HUB_REDIS_URL: unix:// cannot be used with REDIS_CLUSTER",
        ),
        (
            {**CLUSTER, "REDIS_URL": "redis://node-1:7000/2"},
            "REDIS_URL: a Redis Cluster has database 0 only",
        ),
        (CLUSTER, "HUB_REDIS_URL: required with REDIS_CLUSTER (any one node; or REDIS_URL)"),
    ],
)
def test_a_setting_that_cannot_work_is_named(
    redis_of: RedisOf, values: dict[str, str], message: str
) -> None:
    assert refusal(redis_of, values) == message


@PROCESSES
@pytest.mark.parametrize("name", ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE"])
def test_tls_files_need_a_rediss_url(redis_of: RedisOf, name: str, pem: Path) -> None:
    """A CA file next to a plain URL means the operator expects TLS and would not get it."""
    assert refusal(redis_of, {"HUB_REDIS_URL": "redis://h/0", name: str(pem)}) == (
        f"{name}: needs a rediss:// URL in HUB_REDIS_URL"
    )


@PROCESSES
def test_a_key_needs_its_certificate(redis_of: RedisOf, pem: Path) -> None:
    values = {"HUB_REDIS_URL": "rediss://h/0", "REDIS_TLS_KEY_FILE": str(pem)}
    assert refusal(redis_of, values) == "REDIS_TLS_KEY_FILE: needs REDIS_TLS_CERT_FILE"


@PROCESSES
def test_tls_settings_are_read_with_hostname_checks_on_by_default(
    redis_of: RedisOf, pem: Path
) -> None:
    values = {
        "REDIS_URL": "rediss://h:6380/0",
        "REDIS_TLS_CA_FILE": str(pem),
        "REDIS_TLS_CERT_FILE": str(pem),
        "REDIS_TLS_KEY_FILE": str(pem),
    }
    redis = redis_of(values)
    assert redis is not None
    assert (redis.tls_ca_file, redis.tls_cert_file, redis.tls_key_file) == (pem, pem, pem)
    assert redis.tls_verify_hostname
    off = redis_of({**values, "REDIS_TLS_VERIFY_HOSTNAME": "false"})
    assert off is not None
    assert not off.tls_verify_hostname


@PROCESSES
@pytest.mark.parametrize(
    "url", ["redis://u:p@node-1:7000", "redis://node-1:7000/0", "rediss://node-1:7000/?db=0"]
)
def test_a_cluster_is_seeded_by_any_one_node(redis_of: RedisOf, url: str) -> None:
    redis = redis_of({**CLUSTER, "REDIS_URL": url})
    assert redis is not None
    assert redis.cluster
    assert redis.describe().startswith("the Redis Cluster seeded by ")
    assert "u:p" not in redis.describe()


@PROCESSES
def test_no_cluster_unless_asked(redis_of: RedisOf) -> None:
    redis = redis_of({"REDIS_URL": "redis://h/0"})
    assert redis is not None
    assert not redis.cluster


def test_hub_and_worker_read_the_same_settings_the_same_way(pem: Path) -> None:
    values = {**SENTINEL, "REDIS_URL": "rediss://u:p@x/1", "REDIS_TLS_CA_FILE": str(pem)}
    assert hub(values) == worker(values)


def test_the_hub_runs_its_embedded_redis_only_without_url_and_sentinels() -> None:
    assert hub({}) is None
    assert hub(SENTINEL) is not None


@PROCESSES
def test_command_clients_time_out_after_the_command_timeout(redis_of: RedisOf) -> None:
    url = {"HUB_REDIS_URL": "redis://127.0.0.1:6399/0"}
    default = redis_of(url)
    assert default is not None
    assert default.command_timeout == 10.0
    redis = redis_of({**url, "REDIS_COMMAND_TIMEOUT_SECONDS": "2.5"})
    assert redis is not None
    commands = connect_server(redis)
    blocking = connect_server(redis, blocking=True)
    # A dead link is noticed by a command client after the setting; a blocking client (BLPOP,
    # pub/sub) waits on purpose and has no read timeout.
    assert commands.connection_pool.connection_kwargs["socket_timeout"] == 2.5
    assert blocking.connection_pool.connection_kwargs["socket_timeout"] is None


@PROCESSES
@pytest.mark.parametrize("value", ["0", "0.1", "-1", "soon"])
def test_a_command_timeout_that_cannot_work_is_named(redis_of: RedisOf, value: str) -> None:
    message = refusal(
        redis_of, {"HUB_REDIS_URL": "redis://h/0", "REDIS_COMMAND_TIMEOUT_SECONDS": value}
    )
    assert "REDIS_COMMAND_TIMEOUT_SECONDS" in message
