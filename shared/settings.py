"""Broker settings, parsed by hub and worker alike.

Each setting is declared once, on its field: both processes parse it with `from_env` and
both example env files list it (the BROKER section of their catalogs). Settings that
define how the fleet treats a job have one source, never "whichever process touched the
job last" (docs/ARCHITECTURE.md#fleet-settings-one-source-each):

- the hubs' values, published to Redis (publish_policy.lua) and read by every script:
  RESULT_RETENTION_SECONDS, RETRY_BACKOFF_SECONDS, RETRY_BACKOFF_MAX_SECONDS,
  RETRY_AVOID_SECONDS (a worker's values serve only until a hub has published);
- the hub's values, written on the job at submission: MAX_JOB_TIMEOUT_MINUTES, MAX_RETRIES,
  and MAX_PAYLOAD_BYTES is checked there; REAPER_INTERVAL_SECONDS is the hub's alone;
- each worker's own, recorded with it: LEASE_TIMEOUT_SECONDS with HEARTBEAT_INTERVAL_SECONDS
  (the interval must fit in the lease; a gateway worker's too), IDLE_POLL_SECONDS, and
  MAX_RESULT_BYTES for the results it stores (the hub's for gateway workers), and the
  scheduling policies its claims apply (SCHEDULING_POLICIES and their bounds;
  shared/scheduling/), except the fair-share weights, which the hubs publish;
- REDIS_KEY_PREFIX, which must simply be equal everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import ConfigError
from shared.pools import DEFAULT_POOL, check_pool_names
from shared.scheduling.policies import canonical_policies, claim_argument, policies_setting
from shared.setting import integer, items, number, text
from shared.setting_section import Section, read_fields

MIB = 1024 * 1024

BROKER = Section(
    "broker settings: REDIS_KEY_PREFIX must be equal everywhere; the hubs' retention and retry "
    "settings apply fleet-wide; the lease and heartbeat settings are each worker's own"
)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Timings are in seconds, sizes in bytes.

    orphan_grace: a lease the worker does not report as running is returned after this.
    claim_scan_budget: requirement classes examined per index in one claim call.
    scheduling_scan_classes: with scheduling policies on, the most classes a claim examines
    beyond those strict order examines (their cost per claim; the fleet bench tunes it).
    Those and events_max are not settings: tests shorten them.
    """

    prefix: str = BROKER.field(
        text(
            "REDIS_KEY_PREFIX",
            "",
            doc="Prefix of every Redis key; on Redis Cluster each pool adds its hash tag, "
            "{pool}: (braces here would put every pool in one slot)",
        )
    )
    pools: tuple[str, ...] = BROKER.field(
        items(
            "POOLS",
            (DEFAULT_POOL,),
            doc="The pools this process serves: a worker claims from them, a hub accepts, "
            "lists and maintains them (shared/pools.py); the first is a hub's default",
        )
    )
    lease_timeout: float = BROKER.field(
        number(
            "LEASE_TIMEOUT_SECONDS",
            30.0,
            lo=1,
            hi=3600,
            doc="A worker silent this long is dead and its jobs go back to the queue (each "
            "worker's own; the hub's for gateway workers that do not declare one)",
        )
    )
    heartbeat_interval: float = BROKER.field(
        number(
            "HEARTBEAT_INTERVAL_SECONDS",
            10.0,
            lo=0.1,
            hi=600,
            doc="How often workers renew their liveness (must be below LEASE_TIMEOUT_SECONDS)",
        )
    )
    reaper_interval: float = BROKER.field(
        number(
            "REAPER_INTERVAL_SECONDS",
            5.0,
            lo=0.1,
            hi=600,
            doc="How often hubs look for dead workers, timeouts and due retries (hub side)",
        )
    )
    job_timeout: float = BROKER.field(
        number(
            "MAX_JOB_TIMEOUT_MINUTES",
            30.0,
            lo=0.01,
            doc="Default execution limit per job, in minutes",
        ).map(lambda minutes: minutes * 60)
    )
    default_max_retries: int = BROKER.field(
        integer(
            "MAX_RETRIES", 3, lo=0, hi=100, doc="Default retries per job (hub side, at submission)"
        )
    )
    retention: float = BROKER.field(
        number(
            "RESULT_RETENTION_SECONDS",
            24 * 3600.0,
            lo=1,
            doc="How long finished jobs, their results and idempotency keys are kept, in seconds "
            "(the hubs' value applies fleet-wide)",
        )
    )
    retry_backoff_base: float = BROKER.field(
        number(
            "RETRY_BACKOFF_SECONDS",
            1.0,
            lo=0,
            doc="First retry delay; doubles per attempt, with jitter (the hubs' value applies)",
        )
    )
    retry_backoff_cap: float = BROKER.field(
        number(
            "RETRY_BACKOFF_MAX_SECONDS",
            300.0,
            lo=0,
            doc="Longest retry delay (the hubs' value applies)",
        )
    )
    avoid_window: float = BROKER.field(
        number(
            "RETRY_AVOID_SECONDS",
            10.0,
            lo=0,
            hi=3600,
            doc="After a failure, how long other capable workers get the retry first (the hubs' "
            "value applies)",
        )
    )
    idle_poll: float = BROKER.field(
        number(
            "IDLE_POLL_SECONDS",
            5.0,
            lo=0.05,
            hi=300,
            doc="Longest an idle worker waits for a wake-up before it tries to claim anyway",
        )
    )
    max_payload_bytes: int = BROKER.field(
        integer(
            "MAX_PAYLOAD_BYTES", 10 * MIB, lo=1024, doc="Largest job payload accepted, in bytes"
        )
    )
    max_result_bytes: int = BROKER.field(
        integer("MAX_RESULT_BYTES", 10 * MIB, lo=1024, doc="Largest job result accepted, in bytes")
    )
    wait_replicas: int = BROKER.field(
        integer(
            "REDIS_WAIT_REPLICAS",
            0,
            lo=0,
            hi=16,
            doc="Every state change waits until this many replicas hold it (WAIT) before the "
            "hub answers or the worker goes on; 0: no waiting (asynchronous replication)",
        )
    )
    wait_timeout_ms: int = BROKER.field(
        integer(
            "REDIS_WAIT_TIMEOUT_MS",
            1000,
            lo=1,
            hi=5000,
            doc="How long a state change waits for REDIS_WAIT_REPLICAS; fewer in time: the "
            "hub answers 503 and the worker retries (the change stays on the primary)",
        )
    )
    scheduling_policies: tuple[str, ...] = BROKER.field(
        policies_setting(
            "SCHEDULING_POLICIES",
            doc="Scheduling policies a worker's claims apply, comma-separated: affinity (warm "
            "models first), fit (leave small jobs to idle smaller workers), fair (weighted "
            "fair share between customers); none: strict priority then FIFO order (the hub's "
            "apply to gateway workers)",
        )
    )
    affinity_window: int = BROKER.field(
        integer(
            "AFFINITY_PRIORITY_WINDOW",
            10,
            lo=0,
            hi=1000,
            doc="Points of effective priority below the best matching job within which the "
            "policies may choose another job (0: only jobs of the best priority)",
        )
    )
    affinity_max_delay: float = BROKER.field(
        number(
            "AFFINITY_MAX_DELAY_SECONDS",
            30.0,
            lo=0,
            hi=3600,
            doc="Longest a job waits beyond strict order because affinity passed it over",
        )
    )
    fit_max_delay: float = BROKER.field(
        number(
            "FIT_MAX_DELAY_SECONDS",
            10.0,
            lo=0,
            hi=3600,
            doc="Longest a job waits beyond strict order because fit left it to a smaller "
            "idle worker",
        )
    )
    fair_share_half_life: float = BROKER.field(
        number(
            "FAIR_SHARE_HALF_LIFE_SECONDS",
            300.0,
            lo=1,
            hi=7 * 24 * 3600,
            doc="Half-life of the GPU-seconds fair share counts per customer",
        )
    )
    orphan_grace: float = 15.0
    claim_scan_budget: int = 64
    # 16: on the fleet replay (python -m bench fleet --quick, `all`) 8 -> 16 cut cold loads
    # from 29% to 37% fewer than strict order and lifted Jain's index in the burst from 0.91
    # to 0.98 at 1.09x strict order's Redis time per claim; 32 gained little more (38%,
    # 0.98) for up to twice the classes read.
    scheduling_scan_classes: int = 16
    events_max: int = 100_000

    def __post_init__(self) -> None:
        check_pool_names("POOLS", self.pools)
        # Set in code too (the fleet bench: replace(settings, scheduling_policies=(...)), a
        # "a,b" string accepted): validated and put in canonical order either way.
        given: str | tuple[str, ...] = self.scheduling_policies
        names = tuple(given.split(",")) if isinstance(given, str) else tuple(given)
        object.__setattr__(
            self, "scheduling_policies", canonical_policies("SCHEDULING_POLICIES", names)
        )
        if self.heartbeat_interval >= self.lease_timeout:
            raise ConfigError(
                "HEARTBEAT_INTERVAL_SECONDS",
                f"must be below LEASE_TIMEOUT_SECONDS ({self.lease_timeout:g}), "
                f"got {self.heartbeat_interval:g}",
            )

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> BrokerSettings:
        return cls(**read_fields(cls, values))

    @property
    def scheduling_argument(self) -> str:
        """The claim scripts' scheduling ARGV ('' with no policy on: strict order)."""
        return claim_argument(
            self.scheduling_policies,
            window=self.affinity_window,
            affinity_max_delay=self.affinity_max_delay,
            fit_max_delay=self.fit_max_delay,
            half_life=self.fair_share_half_life,
            scan=self.scheduling_scan_classes,
        )

    @property
    def retention_ms(self) -> int:
        return int(self.retention * 1000)
