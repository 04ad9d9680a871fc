"""Hub configuration, read once at start-up from the environment and `.env.hub`.

Every setting is declared once below (its field, or a module constant where several
variables make one value); HUB_SETTINGS, at the end, lists them in the order of
`release/.env.hub.example`. A typo stops the hub with a message naming the setting instead
of a default silently taking over: an unknown `HUB_*` / `WS_*` variable is an error (they are
ours; a misspelt `HUB_OPERATER_TOKEN` would otherwise leave the hub without an operator), and
so is running without any token unless `HUB_AUTH=off` says so explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from hub.pool_routing import PoolRule, check_rules, parse_rules
from hub.priority import AGING_AND_URGENCY, PriorityPolicy
from hub.webhooks.settings import WEBHOOKS, WebhookSettings
from shared.config import ConfigError
from shared.job import MAX_EFFECTIVE_PRIORITY
from shared.redis_settings import REDIS, RedisSettings
from shared.s3 import MAX_PRESIGN_SECONDS, endpoint_setting, store_url_setting
from shared.setting import (
    Setting,
    choice,
    flag,
    integer,
    items,
    number,
    optional_integer,
    optional_text,
    text,
)
from shared.setting_catalog import Catalog
from shared.setting_section import Section, read_fields
from shared.settings import BROKER, MIB, BrokerSettings
from shared.validation import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)
_TOKEN_RE = re.compile(r"[\x21-\x39\x3b-\x7e]{8,512}")  # printable ASCII, no ':' or space
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


MAX_PRIORITY_FIELD = "max_priority="


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A client credential; `customer_id` binds it to one customer's jobs; `max_priority`
    is the highest effective priority its jobs may ever have (None: no ceiling)."""

    token: str
    customer_id: str | None = None
    max_priority: int | None = None


def _ceiling(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_EFFECTIVE_PRIORITY:
        raise ConfigError(name, f"max_priority must be an integer 0-1000, got {text!r}")
    return value


def _tokens(name: str, *, allow_customer: bool, doc: str) -> Setting[tuple[ClientToken, ...]]:
    """Comma-separated tokens; a client token may be `token:customer_id`, and may end in
    `:max_priority=N` (`token:max_priority=N` when unbound). A token never holds ':' and a
    customer id never holds '=', so the three parts are unambiguous."""

    def parse(name: str, value: str) -> tuple[ClientToken, ...]:
        out: list[ClientToken] = []
        for item in _split(value):
            token, sep, rest = item.partition(":")
            if sep and not allow_customer:
                raise ConfigError(name, "an operator token cannot be bound to a customer (no ':')")
            if not _TOKEN_RE.fullmatch(token):
                raise ConfigError(
                    name,
                    "each token must be 8-512 printable ASCII characters without ':' or spaces",
                )
            customer, ceiling = rest, None
            head, _, last = rest.rpartition(":")
            if last.startswith(MAX_PRIORITY_FIELD):
                customer, ceiling = head, _ceiling(name, last.removeprefix(MAX_PRIORITY_FIELD))
            if customer and not _ID_RE.fullmatch(customer):
                raise ConfigError(name, f"invalid customer id after ':' ({ID_PATTERN})")
            if sep and not customer and ceiling is None:
                raise ConfigError(name, "expected a customer id or max_priority=N after ':'")
            out.append(ClientToken(token, customer or None, ceiling))
        return tuple(out)

    return Setting(name, (), doc, parse, secret=True)


def _pairs(name: str, *, doc: str) -> Setting[Mapping[str, str]]:
    """Comma-separated name=value pairs."""

    def parse(name: str, value: str) -> Mapping[str, str]:
        out: dict[str, str] = {}
        for item in _split(value):
            key, sep, paired = item.partition("=")
            if not sep or not key.strip() or not paired.strip():
                raise ConfigError(
                    name, f"expected name=value pairs separated by commas, got {item!r}"
                )
            out[key.strip()] = paired.strip()
        return out

    return Setting(name, MappingProxyType({}), doc, parse)


_ORIGIN_RE = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def _origins(name: str, *, doc: str) -> Setting[tuple[str, ...]]:
    """Comma-separated origins, `scheme://host[:port]` with no path: each becomes a source
    of the dashboard's Content-Security-Policy, where anything more could widen it."""

    def parse(name: str, value: str) -> tuple[str, ...]:
        out = []
        for item in _split(value):
            origin = item.rstrip("/")
            if not _ORIGIN_RE.fullmatch(origin):
                raise ConfigError(
                    name, f"expected origins such as https://outputs.example.com, got {item!r}"
                )
            out.append(origin.lower())
        return tuple(out)

    return Setting(name, (), doc, parse)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


EMBEDDED_REDIS = Section("embedded Redis: used when neither HUB_REDIS_URL nor REDIS_URL is set")
HTTP = Section("HTTP and WebSocket")
AUTH = Section("authentication")
PRIORITY = Section("priority")
POOL_ROUTING = Section(
    "pools: where submissions go (POOLS, among the broker settings, lists the pools this hub "
    "serves; the first is its default)"
)
MAINTENANCE = Section("maintenance")
OUTPUT_STORE = Section(
    "output store: re-signing the expired URLs of stored job outputs",
    note="Workers with OUTPUT_STORE return presigned URLs that expire. With these set, GET\n"
    "/jobs/{id} signs a fresh URL for an expired one; without, it returns the key and says so.\n"
    "Credentials: HUB_OUTPUT_STORE_ACCESS_KEY_ID and HUB_OUTPUT_STORE_SECRET_ACCESS_KEY, else\n"
    "the standard AWS variables or profile. Read-only (GetObject) credentials suffice.",
)

# Variables combined into one value by from_env.
HUB_AUTH_TOKEN = AUTH.add(
    _tokens(
        "HUB_AUTH_TOKEN",
        allow_customer=True,
        doc="Client tokens, comma-separated, each optionally bound to a customer as "
        "token:customer_id, and optionally capped as token[:customer_id]:max_priority=N "
        "(the highest effective priority its jobs may reach, 0-1000)",
    )
)
WS_AUTH_TOKEN = AUTH.add(
    _tokens(
        "WS_AUTH_TOKEN",
        allow_customer=True,
        doc="The seed's name for client tokens; same format, added to HUB_AUTH_TOKEN",
    )
)
CUSTOMER_TIERS = PRIORITY.add(
    _pairs(
        "CUSTOMER_TIERS", doc="Tiers and their priority bonus, e.g. premium=20,default=0,batch=-10"
    )
)
HUB_CUSTOMERS = PRIORITY.add(
    _pairs(
        "HUB_CUSTOMERS",
        doc="Customers' tiers, e.g. acme=premium,lab=batch (tiers must be in CUSTOMER_TIERS)",
    )
)
FAIR_SHARE_WEIGHTS = PRIORITY.add(
    _pairs(
        "FAIR_SHARE_WEIGHTS",
        doc="Fair-share weight per tier, e.g. premium=4,batch=1 (tiers must be in "
        "CUSTOMER_TIERS; a tier not named weighs 1): with SCHEDULING_POLICIES=fair, customers "
        "share contended GPUs in proportion to their weights",
    )
)


@dataclass(frozen=True)
class HubSettings:
    """Everything the hub process needs; `broker` holds the settings shared with workers.

    redis=None (no Redis URL configured) starts the embedded Redis.
    auth_enabled=False (HUB_AUTH=off) runs without tokens: every caller is an operator.
    maintenance=False leaves reaping, retention and aging to other hubs (tests use it too).
    """

    redis: RedisSettings | None = None
    data_dir: Path = EMBEDDED_REDIS.field(  # noqa: RUF009 - a field, like dataclasses.field
        text("HUB_DATA_DIR", "data/redis", doc="Data directory (AOF and RDB files)").map(
            lambda path: Path(path).expanduser()
        )
    )
    embedded_redis_port: int | None = EMBEDDED_REDIS.field(
        optional_integer(
            "HUB_REDIS_PORT",
            lo=1,
            hi=65535,
            doc="Port; empty: a free port. Set 6379 so workers have a fixed address",
        )
    )
    embedded_redis_bind: str = EMBEDDED_REDIS.field(
        text(
            "HUB_REDIS_BIND",
            "127.0.0.1",
            doc="Address; 0.0.0.0 lets workers on other machines in (set a password then)",
        )
    )
    embedded_redis_password: str | None = EMBEDDED_REDIS.field(
        optional_text("HUB_REDIS_PASSWORD", doc="Password (requirepass); empty: none", secret=True)
    )
    host: str = HTTP.field(text("HUB_HOST", "0.0.0.0", doc="Listening address"))
    port: int = HTTP.field(
        integer("HUB_PORT", 3001, lo=0, hi=65535, doc="REST API, dashboard and /ws")
    )
    ws_port: int = HTTP.field(
        integer(
            "WS_PORT",
            3002,
            lo=0,
            hi=65535,
            doc="Second port serving the same app, for clients using the seed's separate "
            "WebSocket port",
        )
    )
    cors_origins: tuple[str, ...] = HTTP.field(
        items(
            "HUB_CORS_ORIGINS", doc="Browser origins allowed by CORS, comma-separated; empty: none"
        )
    )
    max_request_bytes: int = HTTP.field(
        integer(
            "MAX_REQUEST_BYTES",
            10 * MIB,
            lo=1024,
            hi=1024 * MIB,
            doc="Largest request body, in bytes",
        )
    )
    max_header_bytes: int = HTTP.field(
        integer(
            "HUB_MAX_HEADER_BYTES",
            64 * 1024,
            lo=1024,
            hi=16 * MIB,
            doc="Largest request head (request line and headers), in bytes; larger ones get 431",
        )
    )
    header_timeout_seconds: float = HTTP.field(
        number(
            "HUB_HEADER_TIMEOUT_SECONDS",
            10.0,
            lo=0.1,
            hi=3600,
            doc="Seconds a client has to send a whole request head; partial heads then get 408",
        )
    )
    body_timeout_seconds: float = HTTP.field(
        number(
            "HUB_BODY_TIMEOUT_SECONDS",
            30.0,
            lo=0.1,
            hi=3600,
            doc="Seconds a client has to send a whole request body; slower ones get 408",
        )
    )
    max_connections: int = HTTP.field(
        integer(
            "HUB_MAX_CONNECTIONS",
            2048,
            lo=1,
            hi=1_000_000,
            doc="Open connections per port (HTTP and WebSocket); more are answered 503",
        )
    )
    dashboard_image_origins: tuple[str, ...] = HTTP.field(
        _origins(
            "HUB_DASHBOARD_IMAGE_ORIGINS",
            doc="Origins of the output store (e.g. https://outputs.example.com), comma-"
            "separated, whose images the dashboard shows inline besides the hub's own; "
            "empty: none",
        )
    )
    max_subscriptions: int = HTTP.field(
        integer(
            "HUB_MAX_SUBSCRIPTIONS",
            1000,
            lo=1,
            hi=1_000_000,
            doc="Jobs and customers one WebSocket connection may follow at once; past it, "
            "a subscribe gets an error frame",
        )
    )
    access_log: bool = HTTP.field(flag("HUB_ACCESS_LOG", True, doc="Log one line per HTTP request"))
    log_level: str = HTTP.field(
        choice("LOG_LEVEL", "info", LOG_LEVELS, doc="debug, info, warning, error or critical").map(
            str.upper
        )
    )
    log_format: str = HTTP.field(choice("LOG_FORMAT", "json", ("json", "text"), doc="json or text"))
    auth_enabled: bool = AUTH.field(
        flag(
            "HUB_AUTH",
            True,
            doc="Require tokens; off runs the hub open (development only; logged as a warning)",
        )
    )
    operator_tokens: tuple[str, ...] = AUTH.field(
        _tokens(
            "HUB_OPERATOR_TOKEN",
            allow_customer=False,
            doc="Operator tokens (workers, stats, metrics, dashboard), comma-separated",
        ).map(lambda tokens: tuple(t.token for t in tokens))
    )
    legacy_shared_token: bool = AUTH.field(
        flag(
            "HUB_LEGACY_SHARED_TOKEN",
            False,
            doc="Migration from the seed: on the seed's WebSocket endpoints and /api routes, "
            "a client token not bound to a customer may also do what the seed's one shared "
            "token did (open /ws/monitor, request_stats, force_retry_job), so monitors keep "
            "working until they get HUB_OPERATOR_TOKEN; such a monitor sees every job "
            "(logged as a warning)",
        )
    )
    rate_limit_per_second: float = AUTH.field(
        number(
            "HUB_RATE_LIMIT_PER_SECOND",
            0.0,
            lo=0,
            hi=1_000_000,
            doc="Requests per second each client token may make, over all hubs (a token "
            "bucket in Redis); past it 429 with Retry-After. 0: no limit. Operators are exempt",
        )
    )
    rate_limit_burst: int = AUTH.field(
        integer(
            "HUB_RATE_LIMIT_BURST",
            100,
            lo=1,
            hi=1_000_000,
            doc="Requests a client token may make at once before HUB_RATE_LIMIT_PER_SECOND "
            "paces it",
        )
    )
    # HUB_AUTH_TOKEN and WS_AUTH_TOKEN together.
    client_tokens: tuple[ClientToken, ...] = field(default=(), repr=False)
    default_priority: int = PRIORITY.field(
        integer(
            "DEFAULT_JOB_PRIORITY", 50, lo=0, hi=100, doc="Priority of jobs submitted without one"
        )
    )
    # CUSTOMER_TIERS, HUB_CUSTOMERS, FAIR_SHARE_WEIGHTS and the AGING_AND_URGENCY section.
    priority: PriorityPolicy = field(default_factory=PriorityPolicy)
    pool_rules: tuple[PoolRule, ...] = POOL_ROUTING.field(
        Setting(
            "HUB_POOL_RULES",
            (),
            "Where a submission that names no pool goes: field:value=pool rules, comma-"
            "separated, the first match wins, e.g. region:eu=gpu-eu,service:llm=llm,"
            "customer:acme=acme (fields: service, customer, region: the job's service_type, "
            "customer_id and requirements.geographic.region). No match: the first of POOLS. "
            "Every pool named must be in POOLS",
            parse_rules,
        )
    )
    maintenance: bool = MAINTENANCE.field(
        flag(
            "HUB_MAINTENANCE",
            True,
            doc="Run reaping, retention and aging in this hub (safe with several hubs)",
        )
    )
    aging_interval: float = MAINTENANCE.field(
        number(
            "HUB_AGING_INTERVAL_SECONDS",
            30.0,
            lo=0.1,
            hi=86400,
            doc="How often waiting jobs are re-prioritised by age",
        )
    )
    aging_batch: int = MAINTENANCE.field(
        integer(
            "HUB_AGING_BATCH", 2000, lo=1, hi=1_000_000, doc="Jobs re-prioritised per aging pass"
        )
    )
    cleanup_interval: float = MAINTENANCE.field(
        number(
            "HUB_CLEANUP_INTERVAL_SECONDS",
            60.0,
            lo=0.1,
            hi=86400,
            doc="How often expired jobs and results are removed",
        )
    )
    max_pending_seconds: float = MAINTENANCE.field(
        number(
            "HUB_MAX_PENDING_SECONDS",
            0.0,
            lo=0,
            hi=365 * 86400,
            doc='A job no worker has claimed this long after submission fails with "no worker '
            'took it" (its service or requirements are offered by no worker). 0: jobs wait '
            "forever",
        )
    )
    max_wait_seconds: float = MAINTENANCE.field(
        number(
            "HUB_MAX_WAIT_SECONDS",
            60.0,
            lo=0,
            hi=3600,
            doc="Longest wait allowed for GET /jobs/{id}?wait=",
        )
    )
    stats_interval: float = MAINTENANCE.field(
        number(
            "HUB_STATS_INTERVAL_SECONDS",
            5.0,
            lo=0.1,
            hi=3600,
            doc="How often monitors of the seed's WebSocket protocol are sent queue "
            "statistics (stats_broadcast), changed or not",
        )
    )
    stats_change_interval: float = MAINTENANCE.field(
        number(
            "HUB_STATS_CHANGE_SECONDS",
            1.0,
            lo=0.05,
            hi=3600,
            doc="How often monitors of the seed's WebSocket protocol are sent statistics "
            "while they change (the seed's 1 s); each monitor reads them this often",
        )
    )
    fleet_cache_seconds: float = MAINTENANCE.field(
        number(
            "HUB_FLEET_CACHE_SECONDS",
            1.0,
            lo=0,
            hi=60,
            doc="How long the hub reuses its snapshot of the registered workers "
            "(0: always read Redis)",
        )
    )
    output_store: str | None = OUTPUT_STORE.field(
        store_url_setting(
            "HUB_OUTPUT_STORE",
            doc="The workers' OUTPUT_STORE, s3://<bucket>/<prefix>; empty: expired URLs are "
            "not re-signed",
        )
    )
    output_store_endpoint: str | None = OUTPUT_STORE.field(
        endpoint_setting(
            "HUB_OUTPUT_STORE_ENDPOINT_URL",
            doc="The workers' OUTPUT_STORE_ENDPOINT_URL; empty: AWS S3",
        )
    )
    output_store_region: str = OUTPUT_STORE.field(
        text("HUB_OUTPUT_STORE_REGION", "us-east-1", doc="The bucket's region (R2: auto)")
    )
    output_store_path_style: bool = OUTPUT_STORE.field(
        flag("HUB_OUTPUT_STORE_PATH_STYLE", False, doc="The workers' OUTPUT_STORE_PATH_STYLE")
    )
    output_url_ttl: int = OUTPUT_STORE.field(
        integer(
            "HUB_OUTPUT_URL_TTL_SECONDS",
            3600,
            lo=1,
            hi=MAX_PRESIGN_SECONDS,
            doc="How long a URL the hub re-signs stays valid",
        )
    )
    output_store_access_key: str | None = OUTPUT_STORE.field(
        optional_text("HUB_OUTPUT_STORE_ACCESS_KEY_ID", doc="Access key id for re-signing")
    )
    output_store_secret_key: str | None = OUTPUT_STORE.field(
        optional_text(
            "HUB_OUTPUT_STORE_SECRET_ACCESS_KEY", doc="Its secret access key", secret=True
        )
    )
    # The WEBHOOKS section (hub/webhooks/settings.py).
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)

    def __post_init__(self) -> None:
        if self.auth_enabled and not self.client_tokens and not self.operator_tokens:
            raise ConfigError(
                "HUB_AUTH_TOKEN",
                "no token configured: set HUB_AUTH_TOKEN (clients) and HUB_OPERATOR_TOKEN "
                "(operators), or HUB_AUTH=off to run open for local development",
            )
        # A rule to a pool this hub does not serve would turn submissions away at run time.
        check_rules("HUB_POOL_RULES", self.pool_rules, self.broker.pools)

    @classmethod
    def from_env(
        cls, values: Mapping[str, str], *, checked_names: Iterable[str] | None = None
    ) -> HubSettings:
        """Parse and check every setting; raises ConfigError naming the first bad one.

        `checked_names` are the names whose HUB_*/WS_* spelling must be known (default: all
        of `values`). The CLI passes the names from `.env.hub` only: the process environment
        may legitimately hold a co-located worker's HUB_* settings."""
        HUB_SETTINGS.refuse_unknown(values.keys() if checked_names is None else checked_names)
        return cls(
            redis=RedisSettings.from_env(values),
            client_tokens=WS_AUTH_TOKEN.read(values) + HUB_AUTH_TOKEN.read(values),
            priority=_priority_policy(values),
            webhooks=WebhookSettings(**read_fields(WebhookSettings, values)),
            broker=BrokerSettings.from_env(values),
            **read_fields(cls, values),
        )


def _priority_policy(values: Mapping[str, str]) -> PriorityPolicy:
    bonuses: dict[str, int] = {}
    for tier, bonus_text in CUSTOMER_TIERS.read(values).items():
        try:
            bonus = int(bonus_text)
        except ValueError:
            raise ConfigError(
                "CUSTOMER_TIERS", f"bonus of tier {tier!r} is not an integer"
            ) from None
        if not -1000 <= bonus <= 1000:
            raise ConfigError("CUSTOMER_TIERS", f"bonus of tier {tier!r} outside -1000..1000")
        bonuses[tier] = bonus
    customers = HUB_CUSTOMERS.read(values)
    for customer, tier in customers.items():
        if tier not in bonuses:
            raise ConfigError("HUB_CUSTOMERS", f"customer {customer!r} has unknown tier {tier!r}")
    weights: dict[str, float] = {}
    for tier, weight_text in FAIR_SHARE_WEIGHTS.read(values).items():
        if tier not in bonuses:
            raise ConfigError(
                "FAIR_SHARE_WEIGHTS", f"unknown tier {tier!r} (not in CUSTOMER_TIERS)"
            )
        try:
            weight = float(weight_text)
        except ValueError:
            raise ConfigError(
                "FAIR_SHARE_WEIGHTS", f"weight of tier {tier!r} is not a number"
            ) from None
        if not 0 < weight <= 1_000_000:
            raise ConfigError("FAIR_SHARE_WEIGHTS", f"weight of tier {tier!r} outside (0, 1e6]")
        weights[tier] = weight
    return PriorityPolicy(
        tier_bonus=bonuses,
        customer_tiers=customers,
        tier_weight=weights,
        **read_fields(PriorityPolicy, values),
    )


HUB_SETTINGS = Catalog(
    process="hub",
    header="""\
emp-redis hub settings: copy to `.env.hub` in the hub's working directory (or pass
`emp-hub --env-file PATH`). Real environment variables override this file. An empty value
means "unset": the default or automatic value. Every value below is the default, except the
two tokens, which you must replace. Unknown HUB_*/WS_* names and bad values stop the hub at
start-up, naming the setting.
Generated from the declarations in hub/settings.py and shared/: after changing one, run
`python -m scripts.env_examples`.""",
    sections=(
        REDIS,
        EMBEDDED_REDIS,
        HTTP,
        AUTH,
        PRIORITY,
        AGING_AND_URGENCY,
        POOL_ROUTING,
        MAINTENANCE,
        OUTPUT_STORE,
        WEBHOOKS,
        BROKER,
    ),
    owned_prefixes=("HUB_", "WS_"),
    placeholders={
        "HUB_AUTH_TOKEN": "replace-with-a-long-random-client-token",
        "HUB_OPERATOR_TOKEN": "replace-with-a-long-random-operator-token",
    },
)
