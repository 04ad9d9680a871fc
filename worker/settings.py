"""Worker configuration: environment variables (the seed's names) and an optional `.env.worker`.

A bad value stops the worker at start-up with a message naming the variable: on a fleet of
thousands of boxes a typo must be loud, never silently replaced by a default.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError, Env
from shared.settings import BrokerSettings
from shared.validation import ID_PATTERN, SERVICE_PATTERN

ISOLATION_MODES = ("strict", "loose", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    redis_url: str
    worker_id: str
    services: tuple[str, ...]
    broker: BrokerSettings
    auth_token: str | None = None
    worker_type: str = "gpu"
    concurrent_jobs: int = 1
    gpu_count: int | None = None
    gpu_memory_gb: float | None = None
    gpu_model: str | None = None
    cpu_cores: int | None = None
    ram_gb: float | None = None
    models: tuple[str, ...] = ()
    quality_levels: tuple[str, ...] = ("fast", "balanced", "quality")
    region: str | None = None
    compliance: tuple[str, ...] = ()
    cost_per_hour: float = 0.0
    customer_isolation: str = "none"
    allowed_customers: tuple[str, ...] = ()
    denied_customers: tuple[str, ...] = ()
    dashboard_enabled: bool = True
    dashboard_port: int | None = None
    dashboard_host: str = "127.0.0.1"
    shutdown_grace: float = 30.0
    progress_interval: float = 0.5
    health_interval: float = 10.0
    control_keepalive: float = 15.0
    models_dir: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    # Everything the process was configured with: connectors read their own settings here.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, values: Mapping[str, str], *, need_redis: bool = True) -> WorkerSettings:
        """`need_redis=False` for `detect`, which only reports and connects to nothing."""
        env = Env(values)
        redis_url = env.optional_text("HUB_REDIS_URL") or env.optional_text("REDIS_URL")
        if not redis_url and not need_redis:
            redis_url = "redis://127.0.0.1:6379/0"
        if not redis_url:
            raise ConfigError(
                "HUB_REDIS_URL", "required: the Redis URL of the hub, e.g. redis://hub:6379/0"
            )
        if not re.match(r"^(redis|rediss|unix)://", redis_url):
            raise ConfigError("HUB_REDIS_URL", "must start with redis://, rediss:// or unix://")
        services = env.items("SERVICES", ("simulation",))
        for service in services:
            if not re.match(SERVICE_PATTERN, service):
                raise ConfigError("SERVICES", f"{service!r} is not a valid service name")
        worker_id = env.optional_text("WORKER_ID") or default_worker_id(values)
        if not re.match(ID_PATTERN, worker_id):
            raise ConfigError("WORKER_ID", f"{worker_id!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -")
        isolation = env.choice("CUSTOMER_ISOLATION", "none", ISOLATION_MODES)
        allowed = env.items("ALLOWED_CUSTOMERS")
        denied = env.items("DENIED_CUSTOMERS")
        if isolation == "strict" and not allowed:
            raise ConfigError("ALLOWED_CUSTOMERS", "required when CUSTOMER_ISOLATION=strict")
        if denied and isolation != "loose":
            raise ConfigError("DENIED_CUSTOMERS", "only applies with CUSTOMER_ISOLATION=loose")
        port = env.optional_integer("WORKER_DASHBOARD_PORT", lo=0, hi=65535)
        return cls(
            redis_url=redis_url,
            worker_id=worker_id,
            services=services,
            broker=BrokerSettings.from_env(values),
            auth_token=env.optional_text("HUB_AUTH_TOKEN"),
            worker_type=env.text("WORKER_TYPE", "gpu"),
            concurrent_jobs=env.integer("CONCURRENT_JOBS", 1, lo=1, hi=256),
            gpu_count=env.optional_integer("GPU_COUNT", lo=0, hi=256),
            gpu_memory_gb=env.optional_number("GPU_MEMORY_GB", lo=0, hi=100_000),
            gpu_model=env.optional_text("GPU_MODEL"),
            cpu_cores=env.optional_integer("CPU_CORES", lo=1, hi=100_000),
            ram_gb=env.optional_number("RAM_GB", lo=0, hi=1_000_000),
            models=env.items("MODELS"),
            quality_levels=env.items("QUALITY_LEVELS", ("fast", "balanced", "quality")),
            region=env.optional_text("REGION"),
            compliance=env.items("COMPLIANCE"),
            cost_per_hour=env.number("COST_PER_HOUR", 0.0, lo=0),
            customer_isolation=isolation,
            allowed_customers=allowed,
            denied_customers=denied,
            dashboard_enabled=env.flag("WORKER_DASHBOARD_ENABLED", True),
            dashboard_port=port or None,
            dashboard_host=env.text("WORKER_DASHBOARD_HOST", "127.0.0.1"),
            shutdown_grace=env.number("WORKER_SHUTDOWN_GRACE_SECONDS", 30.0, lo=0, hi=86400),
            progress_interval=env.number("WORKER_PROGRESS_INTERVAL_SECONDS", 0.5, lo=0, hi=60),
            health_interval=env.number("WORKER_HEALTH_INTERVAL_SECONDS", 10.0, lo=0.1, hi=3600),
            control_keepalive=env.number("WORKER_CONTROL_KEEPALIVE_SECONDS", 15.0, lo=0.1, hi=3600),
            models_dir=env.optional_text("MODELS_DIR"),
            log_level=env.choice("LOG_LEVEL", "info", LOG_LEVELS).upper(),
            log_format=env.choice("LOG_FORMAT", "text", ("text", "json")),
            env=dict(values),
        )


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
