"""Worker configuration: environment variables (the seed's names) and an optional `.env.worker`.

A bad value stops the worker at start-up with a message naming the variable: on a fleet of
thousands of boxes a typo must be loud, never silently replaced by a default. Every setting
is declared once below (its field, or a module constant where code derives the value);
WORKER_SETTINGS, at the end, lists them, with the shared ones and the built-in connectors',
in the order of `release/.env.worker.example`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError
from shared.pools import DEFAULT_POOL
from shared.redis_settings import REDIS, RedisSettings
from shared.setting import (
    Setting,
    choice,
    flag,
    integer,
    items,
    number,
    optional_integer,
    optional_number,
    optional_text,
    text,
)
from shared.setting_catalog import Catalog
from shared.setting_section import Section, read_fields
from shared.settings import BROKER, BrokerSettings
from shared.validation import ID_PATTERN, SERVICE_INPUT_PATTERN, normalise_service
from shared.worker_grants import worker_id_of
from worker.connectors import BUILTIN_SETTINGS

ISOLATION_MODES = ("strict", "loose", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
# What `detect` reports against when no URL is configured: it connects to nothing.
DETECT_ONLY_REDIS = RedisSettings(url="redis://127.0.0.1:6379/0")

GATEWAY = Section(
    "worker gateway: for boxes that must not hold Redis credentials",
    note="Set both instead of HUB_REDIS_URL: the worker then talks only to these hubs, within\n"
    "the grant its token carries (issued by an operator: POST /gateway/grants).",
)
IDENTITY = Section("identity and work")
CAPABILITIES = Section("capabilities (empty: detected; set to override detection)")
ISOLATION = Section("customer isolation")
RUNNING = Section("dashboard, shutdown, timing, logs")


def _worker_id(name: str, value: str) -> str:
    if not re.fullmatch(ID_PATTERN, value):
        raise ConfigError(name, f"{value!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -")
    return value


def _services(name: str, value: str) -> tuple[str, ...]:
    services = tuple(part.strip() for part in value.split(",") if part.strip())
    for service in services:
        if not re.fullmatch(SERVICE_INPUT_PATTERN, service):
            raise ConfigError(name, f"{service!r} is not a valid service name")
    # Case-insensitive, kept in lower case (shared/validation.py): "ComfyUI" is comfyui.
    return tuple(dict.fromkeys(map(normalise_service, services)))


# Unset, it is derived from the host (default_worker_id), and checked the same way.
WORKER_ID: Setting[str | None] = IDENTITY.add(
    Setting(
        "WORKER_ID",
        None,
        "Stable worker id (1-128 of A-Z a-z 0-9 . _ : @ -); "
        "empty: <hostname>-gpu<first CUDA_VISIBLE_DEVICES>",
        _worker_id,
    )
)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    redis: RedisSettings
    worker_id: str
    broker: BrokerSettings
    gateway_urls: tuple[str, ...] = GATEWAY.field(
        items(
            "WORKER_GATEWAY_URL",
            doc="Hub URLs to reach the broker through, comma-separated, e.g. "
            "https://hub-a:3001,https://hub-b:3001 (tried in turn when one is down)",
        )
    )
    gateway_token: str | None = GATEWAY.field(
        optional_text(
            "WORKER_GATEWAY_TOKEN",
            doc="This worker's gateway token, egw.<worker id>.<secret>; it names the worker id",
            secret=True,
        )
    )
    services: tuple[str, ...] = IDENTITY.field(
        Setting(
            "SERVICES",
            ("simulation",),
            "Connectors to load, comma-separated: simulation, comfyui, a1111, rest_sync, "
            "rest_async, plugins",
            _services,
            shown="simulation",
        )
    )
    worker_type: str = IDENTITY.field(
        text("WORKER_TYPE", "gpu", doc="Free-form worker type reported with the capabilities")
    )
    concurrent_jobs: int = IDENTITY.field(
        integer("CONCURRENT_JOBS", 1, lo=1, hi=256, doc="Jobs this worker runs at once")
    )
    gpu_count: int | None = CAPABILITIES.field(
        optional_integer("GPU_COUNT", lo=0, hi=256, doc="Number of GPUs to report")
    )
    gpu_memory_gb: float | None = CAPABILITIES.field(
        optional_number("GPU_MEMORY_GB", lo=0, hi=100_000, doc="Memory per GPU in GB")
    )
    gpu_model: str | None = CAPABILITIES.field(
        optional_text("GPU_MODEL", doc="GPU model name, e.g. NVIDIA H200")
    )
    cpu_cores: int | None = CAPABILITIES.field(
        optional_integer("CPU_CORES", lo=1, hi=100_000, doc="CPU cores to report")
    )
    ram_gb: float | None = CAPABILITIES.field(
        optional_number("RAM_GB", lo=0, hi=1_000_000, doc="RAM in GB to report")
    )
    models: tuple[str, ...] = CAPABILITIES.field(
        items("MODELS", doc="Models this worker can serve, comma-separated (jobs may require them)")
    )
    models_dir: str | None = CAPABILITIES.field(
        optional_text(
            "MODELS_DIR", doc="Directory holding the models: its free disk space is reported"
        )
    )
    quality_levels: tuple[str, ...] = CAPABILITIES.field(
        items(
            "QUALITY_LEVELS",
            ("fast", "balanced", "quality"),
            doc="Quality levels offered, comma-separated",
        )
    )
    region: str | None = CAPABILITIES.field(
        optional_text("REGION", doc="Region reported for jobs that require one, e.g. eu-west")
    )
    compliance: tuple[str, ...] = CAPABILITIES.field(
        items("COMPLIANCE", doc="Compliance labels, comma-separated, e.g. gdpr,hipaa")
    )
    cost_per_hour: float = CAPABILITIES.field(
        number("COST_PER_HOUR", 0.0, lo=0, doc="Cost per hour reported with the capabilities")
    )
    customer_isolation: str = ISOLATION.field(
        choice(
            "CUSTOMER_ISOLATION",
            "none",
            ISOLATION_MODES,
            doc="none: any customer; loose: any except DENIED_CUSTOMERS; strict: only "
            "ALLOWED_CUSTOMERS",
        )
    )
    allowed_customers: tuple[str, ...] = ISOLATION.field(
        items(
            "ALLOWED_CUSTOMERS",
            doc="Customers served under CUSTOMER_ISOLATION=strict (required then), comma-separated",
        )
    )
    denied_customers: tuple[str, ...] = ISOLATION.field(
        items(
            "DENIED_CUSTOMERS",
            doc="Customers refused under CUSTOMER_ISOLATION=loose, comma-separated",
        )
    )
    operator_token: str | None = RUNNING.field(
        optional_text(
            "HUB_OPERATOR_TOKEN",
            doc="The operator's token: the worker dashboard requires it to show job and "
            "customer ids and to cancel, pause or resume (a client token no longer does); "
            "empty: ids hidden, actions disabled",
            secret=True,
        )
    )
    dashboard_enabled: bool = RUNNING.field(
        flag("WORKER_DASHBOARD_ENABLED", True, doc="Serve the worker's own status page")
    )
    dashboard_port: int | None = RUNNING.field(
        optional_integer(
            "WORKER_DASHBOARD_PORT",
            lo=0,
            hi=65535,
            doc="Dashboard port; empty or 0: the first free port from 1511",
        ).map(lambda port: port or None)
    )
    dashboard_host: str = RUNNING.field(
        text(
            "WORKER_DASHBOARD_HOST",
            "127.0.0.1",
            doc="Dashboard address; 0.0.0.0 to reach it from other machines",
        )
    )
    dashboard_hosts: tuple[str, ...] = RUNNING.field(
        items(
            "WORKER_DASHBOARD_HOSTS",
            doc="Host names the dashboard answers to (the Host header), comma-separated; empty: "
            "localhost, 127.0.0.1, ::1 and WORKER_DASHBOARD_HOST. Others get 421, so a page "
            "on another site cannot read it through DNS rebinding",
        )
    )
    dashboard_max_connections: int = RUNNING.field(
        integer(
            "WORKER_DASHBOARD_MAX_CONNECTIONS",
            32,
            lo=1,
            hi=10_000,
            doc="Open connections the dashboard accepts; more are answered 503 and closed",
        )
    )
    dashboard_header_timeout: float = RUNNING.field(
        number(
            "WORKER_DASHBOARD_HEADER_TIMEOUT_SECONDS",
            10.0,
            lo=0.1,
            hi=3600,
            doc="Seconds a dashboard client has to send a request head; idle and slow "
            "connections are closed after it",
        )
    )
    shutdown_grace: float = RUNNING.field(
        number(
            "WORKER_SHUTDOWN_GRACE_SECONDS",
            30.0,
            lo=0,
            hi=86400,
            doc="On SIGTERM/SIGINT, how long running jobs may take to finish before they are "
            "handed back",
        )
    )
    progress_interval: float = RUNNING.field(
        number(
            "WORKER_PROGRESS_INTERVAL_SECONDS",
            0.5,
            lo=0,
            hi=60,
            doc="Least time between two progress updates of one job",
        )
    )
    health_interval: float = RUNNING.field(
        number(
            "WORKER_HEALTH_INTERVAL_SECONDS",
            10.0,
            lo=0.1,
            hi=3600,
            doc="How often the connectors' services are health-checked",
        )
    )
    control_keepalive: float = RUNNING.field(
        number(
            "WORKER_CONTROL_KEEPALIVE_SECONDS",
            15.0,
            lo=0.1,
            hi=3600,
            doc="Ping the cancel channel after this long without traffic; a link that does not "
            "answer is reopened",
        )
    )
    log_level: str = RUNNING.field(
        choice("LOG_LEVEL", "info", LOG_LEVELS, doc="debug, info, warning or error").map(str.upper)
    )
    log_format: str = RUNNING.field(
        choice(
            "LOG_FORMAT", "text", ("text", "json"), doc="text or json (one JSON object per line)"
        )
    )
    # Everything the process was configured with: connectors read their own settings here.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def through_gateway(self) -> bool:
        return bool(self.gateway_urls)

    @classmethod
    def from_env(cls, values: Mapping[str, str], *, need_redis: bool = True) -> WorkerSettings:
        """`need_redis=False` for `detect`, which only reports and connects to nothing."""
        fields = read_fields(cls, values)
        redis = RedisSettings.from_env(values)
        gateway = bool(fields["gateway_urls"])
        if gateway:
            worker_id = _gateway_worker_id(fields["gateway_token"], WORKER_ID.read(values))
            if redis is not None:
                raise ConfigError(
                    "WORKER_GATEWAY_URL",
                    "a gateway worker must not hold Redis credentials: unset HUB_REDIS_URL "
                    "and REDIS_URL",
                )
        elif fields["gateway_token"] is not None:
            raise ConfigError("WORKER_GATEWAY_URL", "required with WORKER_GATEWAY_TOKEN")
        else:
            if redis is None and need_redis:
                raise ConfigError(
                    "HUB_REDIS_URL",
                    "required: the Redis URL of the hub, e.g. redis://hub:6379/0 (or "
                    "REDIS_SENTINELS; or WORKER_GATEWAY_URL and WORKER_GATEWAY_TOKEN for a "
                    "gateway worker)",
                )
            worker_id = WORKER_ID.read(values) or _worker_id(
                WORKER_ID.name, default_worker_id(values)
            )
        settings = cls(
            redis=redis or DETECT_ONLY_REDIS,
            worker_id=worker_id,
            broker=BrokerSettings.from_env(values),
            env=dict(values),
            **fields,
        )
        if gateway and settings.broker.pools != (DEFAULT_POOL,):
            # The gateway claims and reports in the default pool only (hub/gateway.py):
            # a gateway worker told to serve other pools would silently serve none of them.
            raise ConfigError(
                "POOLS",
                f"a gateway worker (WORKER_GATEWAY_URL) serves the {DEFAULT_POOL!r} pool only, "
                f"got {','.join(settings.broker.pools)!r}: unset POOLS, or connect to Redis "
                "directly (HUB_REDIS_URL) to serve other pools",
            )
        if settings.customer_isolation == "strict" and not settings.allowed_customers:
            raise ConfigError("ALLOWED_CUSTOMERS", "required when CUSTOMER_ISOLATION=strict")
        if settings.denied_customers and settings.customer_isolation != "loose":
            raise ConfigError("DENIED_CUSTOMERS", "only applies with CUSTOMER_ISOLATION=loose")
        return settings


def _gateway_worker_id(token: str | None, configured: str | None) -> str:
    """A gateway worker's id is the one its token was issued for."""
    if token is None:
        raise ConfigError("WORKER_GATEWAY_TOKEN", "required with WORKER_GATEWAY_URL")
    named = worker_id_of(token)
    if named is None:
        raise ConfigError("WORKER_GATEWAY_TOKEN", "not a gateway token (egw.<worker id>.<secret>)")
    if configured is not None and configured != named:
        raise ConfigError("WORKER_ID", f"the gateway token is for worker {named!r}")
    return _worker_id("WORKER_GATEWAY_TOKEN", named)


def default_worker_id(values: Mapping[str, str]) -> str:
    """Stable across restarts: the host name plus the GPU this process is bound to.

    PM2 / systemd run one worker per GPU with CUDA_VISIBLE_DEVICES set, so that index tells
    the processes of one box apart; a random id per start would orphan its own leases.
    """
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "worker"
    visible = values.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    suffix = f"gpu{visible}" if re.fullmatch(r"[A-Za-z0-9-]+", visible) else "gpu0"
    return f"{host[:100]}-{suffix}"


def env_file_path(values: Mapping[str, str] | None = None) -> Path:
    source = os.environ if values is None else values
    return Path(source.get("WORKER_ENV_FILE", ".env.worker"))


WORKER_SETTINGS = Catalog(
    process="worker",
    header="""\
emp-redis worker settings: copy to `.env.worker` in the worker's working directory, or point
WORKER_ENV_FILE at it. Real environment variables override this file (PM2 and systemd set the
per-GPU ones: CUDA_VISIBLE_DEVICES, WORKER_ID, WORKER_DASHBOARD_PORT). An empty value means
"unset": the default or automatic value. Every value below is the default, except
HUB_REDIS_URL, which you must set (or, for a gateway worker, WORKER_GATEWAY_URL and
WORKER_GATEWAY_TOKEN instead). A bad value stops the worker at start-up, naming it.
(WORKER_ENV_FILE and SHIV_ROOT, where worker.pyz extracts itself, are read from the real
environment only, never from this file. HUB_WS_URL, which the seed's workers needed, is
ignored.)
Generated from the declarations in worker/ and shared/: after changing one, run
`python -m scripts.env_examples`.""",
    sections=(
        REDIS,
        GATEWAY,
        IDENTITY,
        CAPABILITIES,
        ISOLATION,
        RUNNING,
        BROKER,
        *BUILTIN_SETTINGS,
    ),
    placeholders={"HUB_REDIS_URL": "redis://emp-worker:change-me@hub.example.internal:6379/0"},
)
