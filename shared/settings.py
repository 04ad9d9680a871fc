"""Broker settings shared by hub and worker (both must agree on leases and key prefix)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ConfigError, Env

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Timings are in seconds, sizes in bytes.

    lease_timeout: a worker silent this long is dead and its jobs go back to pending.
    heartbeat_interval: how often workers renew liveness (must be well under the lease).
    reaper_interval: how often hubs run maintenance (dead workers, timeouts, due retries).
    job_timeout: default execution limit per job (MAX_JOB_TIMEOUT_MINUTES).
    retention: how long finished jobs, their results and idempotency keys are kept.
    retry_backoff_base / retry_backoff_cap: exponential backoff between attempts.
    avoid_window: after a failure, how long past the retry's due time the failing worker
        is passed over so another capable worker gets the job first.
    orphan_grace: a lease the worker does not report as running is returned after this.
    claim_scan_budget: requirement classes examined per index in one claim call.
    idle_poll: the longest an idle worker blocks before claiming anyway.
    """

    prefix: str = ""
    lease_timeout: float = 30.0
    heartbeat_interval: float = 10.0
    reaper_interval: float = 5.0
    job_timeout: float = 30 * 60.0
    default_max_retries: int = 3
    retention: float = 24 * 3600.0
    retry_backoff_base: float = 1.0
    retry_backoff_cap: float = 300.0
    avoid_window: float = 10.0
    orphan_grace: float = 15.0
    claim_scan_budget: int = 64
    idle_poll: float = 5.0
    events_max: int = 100_000
    max_payload_bytes: int = 10 * MIB
    max_result_bytes: int = 10 * MIB

    def __post_init__(self) -> None:
        if self.heartbeat_interval >= self.lease_timeout:
            raise ConfigError(
                "HEARTBEAT_INTERVAL_SECONDS",
                f"must be below LEASE_TIMEOUT_SECONDS ({self.lease_timeout:g}), "
                f"got {self.heartbeat_interval:g}",
            )

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> BrokerSettings:
        env = Env(values)
        d = cls()
        return cls(
            prefix=env.text("REDIS_KEY_PREFIX", d.prefix),
            lease_timeout=env.number("LEASE_TIMEOUT_SECONDS", d.lease_timeout, lo=1, hi=3600),
            heartbeat_interval=env.number(
                "HEARTBEAT_INTERVAL_SECONDS", d.heartbeat_interval, lo=0.1, hi=600
            ),
            reaper_interval=env.number(
                "REAPER_INTERVAL_SECONDS", d.reaper_interval, lo=0.1, hi=600
            ),
            job_timeout=60 * env.number("MAX_JOB_TIMEOUT_MINUTES", d.job_timeout / 60, lo=0.01),
            default_max_retries=env.integer("MAX_RETRIES", d.default_max_retries, lo=0, hi=100),
            retention=env.number("RESULT_RETENTION_SECONDS", d.retention, lo=1),
            retry_backoff_base=env.number("RETRY_BACKOFF_SECONDS", d.retry_backoff_base, lo=0),
            retry_backoff_cap=env.number("RETRY_BACKOFF_MAX_SECONDS", d.retry_backoff_cap, lo=0),
            avoid_window=env.number("RETRY_AVOID_SECONDS", d.avoid_window, lo=0, hi=3600),
            idle_poll=env.number("IDLE_POLL_SECONDS", d.idle_poll, lo=0.05, hi=300),
            max_payload_bytes=env.integer("MAX_PAYLOAD_BYTES", d.max_payload_bytes, lo=1024),
            max_result_bytes=env.integer("MAX_RESULT_BYTES", d.max_result_bytes, lo=1024),
        )

    @property
    def retention_ms(self) -> int:
        return int(self.retention * 1000)
