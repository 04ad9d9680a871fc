"""Hub configuration, read once at start-up from the environment and `.env.hub`.

Every value is checked here so a typo stops the hub with a message naming the setting,
instead of a default silently taking over: an unknown `HUB_*` / `WS_*` variable is an error
(they are ours; a misspelt `HUB_OPERATER_TOKEN` would otherwise leave the hub without an
operator), and so is running without any token unless `HUB_AUTH=off` says so explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hub.priority import PriorityPolicy
from shared.config import ConfigError, Env
from shared.settings import MIB, BrokerSettings
from shared.validation import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)
_TOKEN_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]{8,512}$")  # printable ASCII, no ':' or space

KNOWN_PREFIXED = frozenset(
    {
        "HUB_HOST",
        "HUB_REDIS_URL",
        "HUB_PORT",
        "HUB_AUTH",
        "HUB_AUTH_TOKEN",
        "HUB_OPERATOR_TOKEN",
        "HUB_CORS_ORIGINS",
        "HUB_DATA_DIR",
        "HUB_REDIS_PORT",
        "HUB_REDIS_BIND",
        "HUB_REDIS_PASSWORD",
        "HUB_CUSTOMERS",
        "HUB_AGING_POINTS_PER_MINUTE",
        "HUB_AGING_MAX_POINTS",
        "HUB_URGENCY_MAX_POINTS",
        "HUB_URGENCY_WINDOW_SECONDS",
        "HUB_AGING_INTERVAL_SECONDS",
        "HUB_AGING_BATCH",
        "HUB_CLEANUP_INTERVAL_SECONDS",
        "HUB_MAINTENANCE",
        "HUB_MAX_WAIT_SECONDS",
        "HUB_ACCESS_LOG",
        "HUB_STATS_INTERVAL_SECONDS",
        "HUB_FLEET_CACHE_SECONDS",
        "HUB_HEADER_TIMEOUT_SECONDS",
        "HUB_BODY_TIMEOUT_SECONDS",
        "HUB_MAX_HEADER_BYTES",
        "HUB_MAX_CONNECTIONS",
        "WS_PORT",
        "WS_AUTH_TOKEN",
    }
)
OUR_PREFIXES = ("HUB_", "WS_")


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A client credential; `customer_id` binds it to one customer's jobs."""

    token: str
    customer_id: str | None = None


@dataclass(frozen=True)
class HubSettings:
    """Everything the hub process needs; `broker` holds the settings shared with workers.

    auth_enabled=False (HUB_AUTH=off) runs without tokens: every caller is an operator.
    maintenance=False leaves reaping, retention and aging to other hubs (tests use it too).
    """

    redis_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 3001
    ws_port: int = 3002
    client_tokens: tuple[ClientToken, ...] = ()
    operator_tokens: tuple[str, ...] = ()
    auth_enabled: bool = True
    default_priority: int = 50
    log_level: str = "INFO"
    log_format: str = "json"
    access_log: bool = True
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 10 * MIB
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 2048
    data_dir: Path = Path("data/redis")
    embedded_redis_port: int | None = None
    embedded_redis_bind: str = "127.0.0.1"
    embedded_redis_password: str | None = None
    priority: PriorityPolicy = field(default_factory=PriorityPolicy)
    maintenance: bool = True
    aging_interval: float = 30.0
    aging_batch: int = 2000
    cleanup_interval: float = 60.0
    max_wait_seconds: float = 60.0
    stats_interval: float = 5.0
    fleet_cache_seconds: float = 1.0
    broker: BrokerSettings = field(default_factory=BrokerSettings)

    def __post_init__(self) -> None:
        if self.auth_enabled and not self.client_tokens and not self.operator_tokens:
            raise ConfigError(
                "HUB_AUTH_TOKEN",
                "no token configured: set HUB_AUTH_TOKEN (clients) and HUB_OPERATOR_TOKEN "
                "(operators), or HUB_AUTH=off to run open for local development",
            )

    @classmethod
    def from_env(
        cls, values: Mapping[str, str], *, checked_names: Iterable[str] | None = None
    ) -> HubSettings:
        """Parse and check every setting; raises ConfigError naming the first bad one.

        `checked_names` are the names whose HUB_*/WS_* spelling must be known (default: all
        of `values`). The CLI passes the names from `.env.hub` only: the process environment
        may legitimately hold a co-located worker's HUB_* settings."""
        names = values.keys() if checked_names is None else checked_names
        unknown = sorted(k for k in names if k.startswith(OUR_PREFIXES) and k not in KNOWN_PREFIXED)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting (unknown: {', '.join(unknown)})")
        env = Env(values)
        auth_enabled = env.flag("HUB_AUTH", True)
        client_tokens = _client_tokens(env, "WS_AUTH_TOKEN") + _client_tokens(env, "HUB_AUTH_TOKEN")
        operator_tokens = tuple(t.token for t in _tokens(env, "HUB_OPERATOR_TOKEN", False))
        default_priority = env.integer("DEFAULT_JOB_PRIORITY", 50, lo=0, hi=100)
        redis_port = env.optional_integer("HUB_REDIS_PORT", lo=1, hi=65535)
        return cls(
            redis_url=env.optional_text("REDIS_URL") or env.optional_text("HUB_REDIS_URL"),
            host=env.text("HUB_HOST", "0.0.0.0"),
            port=env.integer("HUB_PORT", 3001, lo=0, hi=65535),
            ws_port=env.integer("WS_PORT", 3002, lo=0, hi=65535),
            client_tokens=client_tokens,
            operator_tokens=operator_tokens,
            auth_enabled=auth_enabled,
            default_priority=default_priority,
            log_level=env.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ).upper(),
            log_format=env.choice("LOG_FORMAT", "json", ("json", "text")),
            access_log=env.flag("HUB_ACCESS_LOG", True),
            cors_origins=env.items("HUB_CORS_ORIGINS"),
            max_request_bytes=env.integer("MAX_REQUEST_BYTES", 10 * MIB, lo=1024, hi=1024 * MIB),
            header_timeout_seconds=env.number("HUB_HEADER_TIMEOUT_SECONDS", 10.0, lo=0.1, hi=3600),
            body_timeout_seconds=env.number("HUB_BODY_TIMEOUT_SECONDS", 30.0, lo=0.1, hi=3600),
            max_header_bytes=env.integer("HUB_MAX_HEADER_BYTES", 64 * 1024, lo=1024, hi=16 * MIB),
            max_connections=env.integer("HUB_MAX_CONNECTIONS", 2048, lo=1, hi=1_000_000),
            data_dir=Path(env.text("HUB_DATA_DIR", "data/redis")).expanduser(),
            embedded_redis_port=redis_port,
            embedded_redis_bind=env.text("HUB_REDIS_BIND", "127.0.0.1"),
            embedded_redis_password=env.optional_text("HUB_REDIS_PASSWORD"),
            priority=_priority_policy(env),
            maintenance=env.flag("HUB_MAINTENANCE", True),
            aging_interval=env.number("HUB_AGING_INTERVAL_SECONDS", 30.0, lo=0.1, hi=86400),
            aging_batch=env.integer("HUB_AGING_BATCH", 2000, lo=1, hi=1_000_000),
            cleanup_interval=env.number("HUB_CLEANUP_INTERVAL_SECONDS", 60.0, lo=0.1, hi=86400),
            max_wait_seconds=env.number("HUB_MAX_WAIT_SECONDS", 60.0, lo=0, hi=3600),
            stats_interval=env.number("HUB_STATS_INTERVAL_SECONDS", 5.0, lo=0.1, hi=3600),
            fleet_cache_seconds=env.number("HUB_FLEET_CACHE_SECONDS", 1.0, lo=0, hi=60),
            broker=BrokerSettings.from_env(values),
        )


def _tokens(env: Env, name: str, allow_customer: bool) -> tuple[ClientToken, ...]:
    """Comma-separated tokens; a client token may be `token:customer_id`."""
    out: list[ClientToken] = []
    for item in env.items(name):
        token, sep, customer = item.partition(":")
        if sep and not allow_customer:
            raise ConfigError(name, "an operator token cannot be bound to a customer (no ':')")
        if not _TOKEN_RE.match(token):
            raise ConfigError(
                name, "each token must be 8-512 printable ASCII characters without ':' or spaces"
            )
        if sep and not _ID_RE.match(customer):
            raise ConfigError(name, f"invalid customer id after ':' ({ID_PATTERN})")
        out.append(ClientToken(token, customer or None))
    return tuple(out)


def _client_tokens(env: Env, name: str) -> tuple[ClientToken, ...]:
    return _tokens(env, name, True)


def _pairs(env: Env, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env.items(name):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(name, f"expected name=value pairs separated by commas, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _priority_policy(env: Env) -> PriorityPolicy:
    bonuses: dict[str, int] = {}
    for tier, text in _pairs(env, "CUSTOMER_TIERS").items():
        try:
            bonus = int(text)
        except ValueError:
            raise ConfigError(
                "CUSTOMER_TIERS", f"bonus of tier {tier!r} is not an integer"
            ) from None
        if not -1000 <= bonus <= 1000:
            raise ConfigError("CUSTOMER_TIERS", f"bonus of tier {tier!r} outside -1000..1000")
        bonuses[tier] = bonus
    customers = _pairs(env, "HUB_CUSTOMERS")
    for customer, tier in customers.items():
        if tier not in bonuses:
            raise ConfigError("HUB_CUSTOMERS", f"customer {customer!r} has unknown tier {tier!r}")
    return PriorityPolicy(
        tier_bonus=bonuses,
        customer_tiers=customers,
        aging_points_per_minute=env.number("HUB_AGING_POINTS_PER_MINUTE", 1.0, lo=0, hi=1000),
        aging_max_points=env.integer("HUB_AGING_MAX_POINTS", 100, lo=0, hi=1000),
        urgency_max_points=env.integer("HUB_URGENCY_MAX_POINTS", 100, lo=0, hi=1000),
        urgency_window_seconds=env.number(
            "HUB_URGENCY_WINDOW_SECONDS", 3600.0, lo=1, hi=365 * 86400
        ),
    )
