"""The status document the dashboard serves: what the page renders and `/api/status` returns.

One function builds it for both, so the server-rendered page and the JSON the browser refreshes
it from can never disagree. Everything leaves through `scrub`, whatever a connector put in it.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from shared import __version__
from shared.redaction import scrub
from shared.settings import BrokerSettings
from worker.dashboard.http_helpers import NO_TOKEN_MESSAGE
from worker.dashboard.worker_view import DashboardWorker
from worker.hardware.info import HardwareInfo
from worker.hardware.report import to_report
from worker.job_runner import HeldJob, Outcome

HISTORY_LIMIT = 100
REFRESH_SECONDS = 2
# A service's error can be a page of node errors; the table needs the gist, and every open
# tab downloads the whole history every 2 s.
MAX_TEXT = 500

# Outcomes that say something about this worker's success; cancelled / released / stale jobs
# were stopped by someone else and count neither way.
JUDGED = ("completed", "failed", "retrying")

RESOURCE_FIELDS = ("cpu_percent", "ram_used_gb", "ram_total_gb", "ram_percent", "gpu_error")
GPU_FIELDS = ("utilization_gpu", "memory_used_gb", "memory_total_gb", "error")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: always a value that was observed, None for no data."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def job_stats(outcomes: list[Outcome]) -> dict[str, Any]:
    """Success rate over judged outcomes; processing time over completed jobs only, because
    a failure that happens at once would otherwise flatter the percentiles."""
    counts = collections.Counter(o.status for o in outcomes)
    judged = sum(counts[s] for s in JUDGED)
    durations = sorted(o.seconds for o in outcomes if o.status == "completed")
    p50, p95 = percentile(durations, 50), percentile(durations, 95)
    return {
        "jobs": len(outcomes),
        "counts": dict(counts),
        "success_rate": round(100 * counts["completed"] / judged, 1) if judged else None,
        "p50_seconds": None if p50 is None else round(p50, 3),
        "p95_seconds": None if p95 is None else round(p95, 3),
    }


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[: MAX_TEXT - 1] + "\u2026"


def _running_view(held: HeldJob, now: float) -> dict[str, Any]:
    job = held.job  # never held.token: it is the fencing token that lets its holder report
    return {
        "job_id": job.id,
        "service_type": job.service_type,
        "customer_id": job.customer_id,
        "priority": job.priority,
        "attempt": job.attempts + 1,
        "timeout_seconds": job.timeout_seconds,
        "progress": round(held.progress, 1),
        "message": _clip(held.message),
        "started_at": _iso(held.started),
        "elapsed_seconds": round(max(0.0, now - held.started), 1),
        "cancelling": held.cancel.is_set(),
    }


def _outcome_view(o: Outcome) -> dict[str, Any]:
    return {
        "job_id": o.job_id,
        "status": o.status,
        "error": _clip(o.error),
        "seconds": round(o.seconds, 3),
        "finished_at": _iso(o.finished),
        "images": list(o.images),
    }


def _resources(utilization: Mapping[str, Any], hardware: HardwareInfo) -> dict[str, Any]:
    """The live sample with every field the page shows present (a failed reading has fewer),
    and each GPU's name, known from detection rather than sampled again."""
    names = {g.index: g.name for g in hardware.gpus}
    gpus = [g for g in utilization.get("gpus") or [] if isinstance(g, Mapping)]
    return {
        **dict.fromkeys(RESOURCE_FIELDS),
        **utilization,
        "gpus": [
            {**dict.fromkeys(GPU_FIELDS), "name": names.get(g.get("index", -1)), **g} for g in gpus
        ],
    }


def _scheduling_view(broker: BrokerSettings) -> dict[str, Any]:
    """The scheduling policies this worker's claims apply, with their bounds (none: strict
    priority then FIFO order)."""
    return {
        "policies": list(broker.scheduling_policies),
        "summary": ", ".join(broker.scheduling_policies) or "strict order",
        "priority_window": broker.affinity_window,
        "affinity_max_delay_seconds": broker.affinity_max_delay,
        "fit_max_delay_seconds": broker.fit_max_delay,
        "fair_share_half_life_seconds": broker.fair_share_half_life,
    }


def _open_view(doc: dict[str, Any]) -> None:
    """Blank what names a job or a customer, for a reader without the operator's token:
    ids, and the messages and errors that clients and AI services write (they may quote
    either). Counts, progress, timings and health stay."""
    for job in doc["running"]:
        job.update(job_id=None, customer_id=None, message=None)
    for outcome in doc["history"]:
        # The URLs open a customer's outputs: operators only.
        outcome.update(job_id=None, error=None, images=[])
    access = doc["capabilities"].get("customer_access") or {}
    for names in ("allowed_customers", "denied_customers"):
        if names in access:
            access[names] = []


def snapshot(
    worker: DashboardWorker,
    utilization: Mapping[str, Any],
    now: float | None = None,
    *,
    detail: bool = True,
) -> dict[str, Any]:
    """Everything the page shows, JSON-ready and scrubbed of secrets; with `detail` False,
    without anything that names a job or a customer (`detail` in the document says which)."""
    now = time.time() if now is None else now
    settings = worker.settings
    running = sorted(worker.running.values(), key=lambda held: held.started)
    outcomes = list(itertools.islice(worker.history, HISTORY_LIMIT))
    age = worker.heartbeat_age
    doc = {
        "worker": {
            "id": worker.id,
            "version": __version__,
            "type": settings.worker_type,
            "status": worker.status,
            "state": worker.state,
            "started_at": _iso(worker.started),
            "uptime_seconds": round(max(0.0, now - worker.started), 1),
            "heartbeat_age_seconds": None if age is None else round(age, 1),
            # Three missed beats: the hub will soon consider this worker dead.
            "heartbeat_late": age is None or age > 3 * settings.broker.heartbeat_interval,
            "slots": {"total": settings.concurrent_jobs, "busy": len(running)},
            "services": list(settings.services),
            "pools": list(settings.broker.pools),
            "scheduling": _scheduling_view(settings.broker),
            "redis": "" if settings.through_gateway else settings.redis.describe(),
            "gateway": ", ".join(settings.gateway_urls),
            "dashboard_url": worker.dashboard_url,
        },
        "controls": {
            "enabled": bool(settings.operator_token),
            "reason": None if settings.operator_token else NO_TOKEN_MESSAGE,
        },
        "detail": detail,
        "running": [_running_view(held, now) for held in running],
        "history": [_outcome_view(o) for o in outcomes],
        "stats": job_stats(outcomes),
        "resources": _resources(utilization, worker.hardware),
        "hardware": to_report(worker.hardware),
        "connectors": [
            {"name": name, "ok": h.ok, "detail": h.detail, "info": dict(h.info)}
            for name, h in sorted(worker.health.items())
        ],
        "capabilities": msgspec.to_builtins(worker.capabilities),
        "refresh_seconds": REFRESH_SECONDS,
        "generated_at": _iso(now),
    }
    if not detail:
        _open_view(doc)
    scrubbed: dict[str, Any] = scrub(doc)
    return scrubbed
