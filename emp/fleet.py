"""The fleet as operators see it: workers (GET /workers) and statistics (GET /stats).

Both routes need an operator token. Like the job models, these keep the hub's JSON in
`raw`: the statistics document in particular holds more than the typed fields name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from emp._fields import Fields


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_gb: float
    index: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    """One live worker: what it offers, what it is doing, and how it has done."""

    id: str
    alive: bool
    status: str  # idle, busy, offline, ...
    state: str  # operator state: active, paused, draining
    services: list[str] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    # Loaded now, most recently used first (the hub's README, Warm models).
    warm_models: list[str] = field(default_factory=list)
    region: str | None = None
    current_jobs: list[str] = field(default_factory=list)
    heartbeat_age_seconds: float | None = None
    last_heartbeat: datetime | None = None
    registered_at: datetime | None = None
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> Worker:
        f = Fields(raw, "worker")
        caps = Fields(f.obj("capabilities"), "worker.capabilities")
        hardware = Fields(caps.obj("hardware"), "worker.capabilities.hardware")
        counters = Fields(f.obj("counters"), "worker.counters")
        geographic = Fields(caps.obj("geographic"), "worker.capabilities.geographic")
        return cls(
            id=f.text("id"),
            alive=f.flag("alive", True),
            status=f.text("status", "unknown"),
            state=f.text("state", "active"),
            services=caps.texts("services"),
            gpus=[_gpu(g, i) for i, g in enumerate(hardware.items("gpus"))],
            models=caps.texts("models"),
            warm_models=caps.texts("warm_models"),
            region=geographic.opt_text("region"),
            current_jobs=f.texts("current_jobs"),
            heartbeat_age_seconds=f.opt_number("heartbeat_age_seconds"),
            last_heartbeat=f.time("last_heartbeat"),
            registered_at=f.time("registered_at"),
            claimed=counters.integer("claimed"),
            completed=counters.integer("completed"),
            failed=counters.integer("failed"),
            raw=f.raw,
        )


def _gpu(raw: Any, index: int) -> Gpu:
    f = Fields(raw, f"worker.capabilities.hardware.gpus[{index}]")
    return Gpu(f.text("name"), f.number("memory_gb"), f.integer("index", index))


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles (milliseconds) of a sample of recent jobs."""

    p50: int | None = None
    p90: int | None = None
    p99: int | None = None
    samples: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """GET /stats: the queue, job counts, throughput, timings and the fleet in one read."""

    now: datetime | None
    pending: int  # all pending jobs, those backing off included
    claimable: int  # pending jobs a worker may take now
    backing_off: int  # retries waiting out their backoff
    pending_by_priority: dict[str, int]  # urgent, high, normal, low
    pending_by_service: dict[str, int]
    jobs: dict[str, int]  # jobs per status (finished ones within retention)
    throughput: dict[str, dict[str, int]]  # "1m"/"5m"/"15m" -> counter -> count
    wait_ms: Percentiles
    run_ms: Percentiles
    workers: int
    workers_busy: int
    workers_by_status: dict[str, int]
    workers_by_state: dict[str, int]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Any) -> Stats:
        f = Fields(raw, "stats")
        pending = Fields(f.obj("pending"), "stats.pending")
        workers = Fields(f.obj("workers"), "stats.workers")
        by_service = {
            name: Fields(entry, f"stats.pending.by_service.{name}").integer("total")
            for name, entry in pending.obj("by_service").items()
        }
        return cls(
            now=f.time("now"),
            pending=pending.integer("total"),
            claimable=pending.integer("claimable"),
            backing_off=pending.integer("backing_off"),
            pending_by_priority=_counts(pending, "by_priority"),
            pending_by_service=by_service,
            jobs=_counts(f, "jobs"),
            throughput={
                window: _counts(Fields(counters, f"stats.throughput.{window}"))
                for window, counters in f.obj("throughput").items()
            },
            wait_ms=_percentiles(f.obj("wait_ms")),
            run_ms=_percentiles(f.obj("run_ms")),
            workers=workers.integer("total"),
            workers_busy=workers.integer("busy"),
            workers_by_status=_counts(workers, "by_status"),
            workers_by_state=_counts(workers, "by_state"),
            raw=f.raw,
        )


def _counts(f: Fields, key: str | None = None) -> dict[str, int]:
    """A JSON object of counts; with `key`, the one under that key."""
    inner = Fields(f.obj(key), f"{f.what}.{key}") if key is not None else f
    return {name: inner.integer(name) for name in inner.raw}


def _percentiles(raw: Mapping[str, Any]) -> Percentiles:
    f = Fields(raw, "stats.percentiles")
    return Percentiles(
        f.opt_integer("p50"), f.opt_integer("p90"), f.opt_integer("p99"), f.integer("samples")
    )
