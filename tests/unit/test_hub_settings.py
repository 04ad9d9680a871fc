"""HubSettings.from_env: defaults, tokens, tiers, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.settings import ClientToken, HubSettings
from shared.config import ConfigError, load_environment
from shared.redis_settings import RedisSettings

TOKENS = {"HUB_AUTH_TOKEN": "client-secret-1", "HUB_OPERATOR_TOKEN": "operator-secret-1"}


def test_defaults() -> None:
    s = HubSettings.from_env(TOKENS)
    assert (s.host, s.port, s.ws_port) == ("0.0.0.0", 3001, 3002)
    assert s.redis is None  # no Redis URL: the hub starts its embedded Redis
    assert s.default_priority == 50
    assert s.max_request_bytes == 10 * 1024 * 1024
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert s.broker.job_timeout == 30 * 60
    assert s.client_tokens == (ClientToken("client-secret-1"),)
    assert s.operator_tokens == ("operator-secret-1",)
    assert s.auth_enabled


def test_everything_set() -> None:
    s = HubSettings.from_env(
        {
            "REDIS_URL": "redis://r:6379/1",
            "HUB_HOST": "127.0.0.1",
            "HUB_PORT": "8001",
            "WS_PORT": "8002",
            "WS_AUTH_TOKEN": "legacy-token-1",
            "HUB_AUTH_TOKEN": "tok-aaaaaaaa:acme, tok-bbbbbbbb",
            "HUB_OPERATOR_TOKEN": "ops-token-1",
            "MAX_JOB_TIMEOUT_MINUTES": "5",
            "DEFAULT_JOB_PRIORITY": "40",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "text",
            "RESULT_RETENTION_SECONDS": "60",
            "HUB_CORS_ORIGINS": "https://a.example, https://b.example",
            "MAX_REQUEST_BYTES": "2048",
            "HUB_DATA_DIR": "/tmp/hub-data",
            "CUSTOMER_TIERS": "gold=20,silver=10",
            "HUB_CUSTOMERS": "acme=gold",
            "HUB_AGING_POINTS_PER_MINUTE": "0.5",
            "HUB_HEADER_TIMEOUT_SECONDS": "2.5",
            "HUB_BODY_TIMEOUT_SECONDS": "7",
            "HUB_MAX_HEADER_BYTES": "16384",
            "HUB_MAX_CONNECTIONS": "100",
        }
    )
    assert s.redis == RedisSettings(url="redis://r:6379/1")
    assert (s.host, s.port, s.ws_port) == ("127.0.0.1", 8001, 8002)
    assert s.client_tokens == (
        ClientToken("legacy-token-1"),
        ClientToken("tok-aaaaaaaa", "acme"),
        ClientToken("tok-bbbbbbbb"),
    )
    assert s.broker.job_timeout == 300
    assert s.broker.retention == 60
    assert s.default_priority == 40
    assert (s.log_level, s.log_format) == ("DEBUG", "text")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.max_request_bytes == 2048
    assert s.data_dir == Path("/tmp/hub-data")
    assert s.priority.bonus("acme") == 20
    assert s.priority.aging_points_per_minute == 0.5
    assert (s.header_timeout_seconds, s.body_timeout_seconds) == (2.5, 7.0)
    assert (s.max_header_bytes, s.max_connections) == (16384, 100)


def test_client_tokens_may_carry_a_priority_ceiling() -> None:
    s = HubSettings.from_env(
        {
            "HUB_AUTH_TOKEN": "tok-aaaaaaaa:acme:max_priority=120, tok-bbbbbbbb:max_priority=0,"
            "tok-cccccccc:a:b@c",
            "HUB_OPERATOR_TOKEN": "ops-token-1",
        }
    )
    assert s.client_tokens == (
        ClientToken("tok-aaaaaaaa", "acme", 120),
        ClientToken("tok-bbbbbbbb", None, 0),
        ClientToken("tok-cccccccc", "a:b@c"),  # customer ids may hold ':'
    )


def test_no_token_is_a_startup_error_unless_auth_is_off() -> None:
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env({})
    assert info.value.name == "HUB_AUTH_TOKEN"
    assert "HUB_AUTH=off" in str(info.value)
    s = HubSettings.from_env({"HUB_AUTH": "off"})
    assert not s.auth_enabled


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"HUB_OPERATER_TOKEN": "x"}, "HUB_OPERATER_TOKEN"),
        ({"WS_PROT": "1"}, "WS_PROT"),
        ({"HUB_PORT": "http"}, "HUB_PORT"),
        ({"HUB_PORT": "70000"}, "HUB_PORT"),
        ({"HUB_REDIS_PORT": "0"}, "HUB_REDIS_PORT"),
        ({"HUB_AGING_MAX_POINTS": "1001"}, "HUB_AGING_MAX_POINTS"),
        ({"HUB_ACCESS_LOG": "sometimes"}, "HUB_ACCESS_LOG"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"WS_AUTH_TOKEN": "short"}, "WS_AUTH_TOKEN"),
        ({"DEFAULT_JOB_PRIORITY": "101"}, "DEFAULT_JOB_PRIORITY"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"HUB_AUTH": "maybe"}, "HUB_AUTH"),
        ({"MAX_JOB_TIMEOUT_MINUTES": "0"}, "MAX_JOB_TIMEOUT_MINUTES"),
        ({"MAX_REQUEST_BYTES": "10"}, "MAX_REQUEST_BYTES"),
        ({"HUB_MAX_HEADER_BYTES": "100"}, "HUB_MAX_HEADER_BYTES"),
        ({"HUB_HEADER_TIMEOUT_SECONDS": "0"}, "HUB_HEADER_TIMEOUT_SECONDS"),
        ({"HUB_BODY_TIMEOUT_SECONDS": "forever"}, "HUB_BODY_TIMEOUT_SECONDS"),
        ({"HUB_MAX_CONNECTIONS": "0"}, "HUB_MAX_CONNECTIONS"),
        ({"HUB_AUTH_TOKEN": "short"}, "HUB_AUTH_TOKEN"),
        ({"HUB_AUTH_TOKEN": "has space in it"}, "HUB_AUTH_TOKEN"),
        ({"HUB_AUTH_TOKEN": "token-123456:bad customer"}, "HUB_AUTH_TOKEN"),
        ({"HUB_OPERATOR_TOKEN": "token-123456:acme"}, "HUB_OPERATOR_TOKEN"),
        ({"HUB_AUTH_TOKEN": "token-123456:acme:max_priority=lots"}, "HUB_AUTH_TOKEN"),
        ({"HUB_AUTH_TOKEN": "token-123456:max_priority=1001"}, "HUB_AUTH_TOKEN"),
        ({"HUB_AUTH_TOKEN": "token-123456:"}, "HUB_AUTH_TOKEN"),
        ({"HUB_DASHBOARD_IMAGE_ORIGINS": "https://x.example/path"}, "HUB_DASHBOARD_IMAGE_ORIGINS"),
        ({"HUB_DASHBOARD_IMAGE_ORIGINS": "https: data:"}, "HUB_DASHBOARD_IMAGE_ORIGINS"),
        ({"HUB_DASHBOARD_IMAGE_ORIGINS": "javascript:alert(1)"}, "HUB_DASHBOARD_IMAGE_ORIGINS"),
        ({"CUSTOMER_TIERS": "gold"}, "CUSTOMER_TIERS"),
        ({"CUSTOMER_TIERS": "gold=lots"}, "CUSTOMER_TIERS"),
        ({"CUSTOMER_TIERS": "gold=5000"}, "CUSTOMER_TIERS"),
        ({"HUB_CUSTOMERS": "acme=platinum"}, "HUB_CUSTOMERS"),
        ({"HEARTBEAT_INTERVAL_SECONDS": "60"}, "HEARTBEAT_INTERVAL_SECONDS"),
    ],
)
def test_bad_settings_name_the_setting(values: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env({**TOKENS, **values})
    assert info.value.name == name


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.hub"
    env_file.write_text("HUB_PORT=4000\nHUB_AUTH_TOKEN=file-token-1\nHUB_TYPO=1\n")
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env(load_environment(env_file, {}))
    assert info.value.name == "HUB_TYPO"
    env_file.write_text("HUB_PORT=4000\nHUB_AUTH_TOKEN=file-token-1\n")
    s = HubSettings.from_env(load_environment(env_file, {"HUB_PORT": "5000"}))
    assert s.port == 5000
    assert s.client_tokens == (ClientToken("file-token-1"),)


def test_only_the_named_variables_must_be_known() -> None:
    values = {**TOKENS, "HUB_WS_URL": "ws://elsewhere", "HUB_REDIS_URL": "redis://r:1/0"}
    s = HubSettings.from_env(values, checked_names=["HUB_AUTH_TOKEN"])
    assert s.redis == RedisSettings(url="redis://r:1/0")
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env(values, checked_names=["HUB_WS_URL"])
    assert info.value.name == "HUB_WS_URL"


def test_the_messages_name_the_variable_and_say_what_is_wrong() -> None:
    cases = {
        "HUB_PORT": ("http", "HUB_PORT: expected an integer, got 'http'"),
        "HUB_MAX_CONNECTIONS": ("0", "HUB_MAX_CONNECTIONS: must be >= 1, got 0"),
        "HUB_BODY_TIMEOUT_SECONDS": ("4000", "HUB_BODY_TIMEOUT_SECONDS: must be <= 3600, got 4000"),
        "HUB_MAX_WAIT_SECONDS": ("soon", "HUB_MAX_WAIT_SECONDS: expected a number, got 'soon'"),
        "LOG_FORMAT": ("XML", "LOG_FORMAT: expected one of json, text, got 'xml'"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ConfigError) as info:
            HubSettings.from_env({**TOKENS, name: value})
        assert str(info.value) == message


def test_every_misspelt_hub_or_ws_name_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        HubSettings.from_env({**TOKENS, "WS_PROT": "1", "HUB_PROT": "1", "PORT": "1"})
    assert info.value.name == "HUB_PROT"
    assert str(info.value) == "HUB_PROT: unknown setting (unknown: HUB_PROT, WS_PROT)"


def test_tokens_stay_out_of_the_settings_repr() -> None:
    settings = HubSettings.from_env(
        {**TOKENS, "WS_AUTH_TOKEN": "legacy-secret-1", "HUB_REDIS_PASSWORD": "redis-secret-1"}
    )
    shown = repr(settings)
    for secret in ("client-secret-1", "operator-secret-1", "legacy-secret-1", "redis-secret-1"):
        assert secret not in shown
    assert "port=3001" in shown
