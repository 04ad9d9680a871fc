"""Prometheus metrics, one CollectorRegistry per app (two apps in one test process must not
collide on the global registry).

Two kinds of numbers:
- fleet state that lives in Redis (queue depth, jobs by status, workers by status) is read
  when /metrics is scraped, at most once per `refresh_interval`, into gauges;
- fleet activity (completions, failures, retries, wait and run times) is counted from the
  event stream this hub already tails. Every hub sees every event, so these counters are
  fleet-wide per hub: aggregate them with max(), not sum(), across hubs.
Submissions through this hub's API are this hub's own counter.

Everything that belongs to a pool carries a `pool` label (shared/pools.py): the gauges are
read per pool, the event counters count each pool's stream. A total is a sum over `pool`
(`sum without (pool) (emp_jobs)`); no series holds a total itself, so summing never counts
twice. `?pool=NAME` renders only that pool's series (and those that belong to no pool).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hub.events import Event

OTHER = "other"  # the service label of pending jobs no live worker offers
SECONDS_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class HubMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, refresh_interval: float = 1.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submissions = Counter(
            "emp_hub_submissions",
            "Jobs submitted through this hub's API, by outcome (created, duplicate, rejected)",
            ["outcome"],
            registry=r,
        )
        self.events = Counter(
            "emp_events",
            "Job and worker events seen on the event streams",
            ["type", "pool"],
            registry=r,
        )
        self.wait = Histogram(
            "emp_job_wait_seconds",
            "Time from submission to claim",
            ["pool"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.run = Histogram(
            "emp_job_run_seconds",
            "Time from claim to completion",
            ["pool"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "emp_queue_depth",
            "Pending jobs by service (claimable now)",
            ["service", "pool"],
            registry=r,
        )
        self.jobs = Gauge(
            "emp_jobs",
            "Jobs by status (finished ones within retention)",
            ["status", "pool"],
            registry=r,
        )
        # A worker serving several pools counts in each: its registration is per pool.
        self.workers = Gauge(
            "emp_workers", "Live workers by status", ["status", "pool"], registry=r
        )
        self.connections = Gauge(
            "emp_hub_connections",
            "Open WebSocket/SSE connections on this hub",
            ["kind"],
            registry=r,
        )
        # Children resolved once: labels() takes a lock and a dict lookup on every call.
        self.created = self.submissions.labels("created")
        self.duplicate = self.submissions.labels("duplicate")
        self.rejected = self.submissions.labels("rejected")
        self._event_counters: dict[tuple[str, str], Any] = {}
        self._refresh_interval = refresh_interval
        self._refreshed = 0.0

    def observe_event(self, event: Event) -> None:
        """Event listener (see EventHub.add_listener): cheap, no I/O."""
        key = (event.type, event.pool)
        counter = self._event_counters.get(key)
        if counter is None:
            counter = self._event_counters[key] = self.events.labels(*key)
        counter.inc()
        if event.type == "completed":
            run_ms = event.data.get("run_ms")
            if isinstance(run_ms, int | float):
                self.run.labels(event.pool).observe(max(0.0, run_ms / 1000))
        elif event.type == "claimed":
            wait_ms = event.data.get("wait_ms")
            if isinstance(wait_ms, int | float):
                self.wait.labels(event.pool).observe(max(0.0, wait_ms / 1000))

    def refresh(self, stats: dict[str, Any], offered: Collection[str]) -> None:
        """Update the gauges from a /stats document (its per-pool figures). `offered`: the
        services some live worker offers. Service names come from clients, so only those
        offered become labels; every other pending job counts under `other` (each
        client-chosen name used to become a label, and a series, of its own)."""
        self.queue_depth.clear()
        self.jobs.clear()
        self.workers.clear()
        for pool, figures in stats["pools"].items():
            depth: dict[str, int] = {}
            for service, entry in figures["pending"]["by_service"].items():
                label = service if service in offered else OTHER
                depth[label] = depth.get(label, 0) + int(entry["total"])
            for label, total in depth.items():
                self.queue_depth.labels(label, pool).set(total)
            for status, count in figures["jobs"].items():
                self.jobs.labels(status, pool).set(count)
            for status, count in figures["workers"]["by_status"].items():
                self.workers.labels(status, pool).set(count)
        self._refreshed = time.monotonic()

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._refreshed >= self._refresh_interval

    def render(self, pool: str | None = None) -> bytes:
        """The exposition text; with `pool`, without the series of every other pool."""
        text = generate_latest(self.registry)
        if pool is None:
            return text
        # Label values are escaped in the text format, so a `pool="..."` label of another
        # pool is recognisable on its line; the HELP and TYPE lines carry no labels.
        mine = f'pool="{pool}"'.encode()
        return b"".join(
            line for line in text.splitlines(keepends=True) if b'pool="' not in line or mine in line
        )
