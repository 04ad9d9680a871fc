"""Message shapes of the original emp-redis protocol (docs/PROTOCOL-LEGACY.md, sections
"Messages to clients" and "Monitors").

Kept apart from the socket handling in ws_legacy.py: these are the compatibility contract
(field names, epoch-second timestamps, `processing` for a held job), easy to check against
the reference in one place.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from hub.context import HubContext
from hub.legacy_ids import unescape
from hub.pool_reads import heads as merged_heads
from hub.pool_reads import summaries
from shared.broker import Broker
from shared.job import Job, JobStatus
from shared.text import as_text

MAX_ACTIVE_JOBS = 100
# The client id the original gave jobs submitted over REST; here, every job not submitted
# through a legacy client socket (the new REST API, /ws, the /api aliases).
REST_CLIENT_ID = "rest-api-client"
# A legacy client socket's id travels with its jobs as this tag, so any hub can name the
# submitter on monitor relays (the original kept it in the job hash as `client_id`).
CLIENT_TAG_PREFIX = "emp-client:"


def client_tag(conn_id: str) -> str:
    return f"{CLIENT_TAG_PREFIX}{conn_id}"


def legacy_client_id(job: Job | None) -> str:
    """The legacy client that submitted `job`, or REST_CLIENT_ID."""
    for tag in job.tags if job is not None else ():
        if tag.startswith(CLIENT_TAG_PREFIX):
            return tag.removeprefix(CLIENT_TAG_PREFIX)
    return REST_CLIENT_ID


def legacy_progress(value: object) -> int:
    """Progress as the original's models type it: an int from -1 to 100 (pydantic refuses a
    float with a fraction, so 66.67 must become 67)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(-1, min(100, round(value)))


def legacy_status(status: str) -> str:
    return "processing" if status == "active" else status


def seconds(ms: int | None) -> float | None:
    return ms / 1000 if ms is not None else None


def job_status_message(job: Job) -> dict[str, Any]:
    return {
        "type": "response_job_status",
        "job_id": job.id,
        "status": legacy_status(job.status),
        "progress": legacy_progress(job.progress),
        "worker_id": job.worker_id,
        "started_at": seconds(job.claimed_at),
        "completed_at": seconds(job.finished_at),
        "result": job.result,
        "error": job.error,
        "message": job.message,
        "timestamp": time.time(),
    }


async def stats_broadcast(hub: HubContext) -> dict[str, Any]:
    """The original monitor feed: connections, workers, subscriptions, system stats, over
    every pool this hub serves (the original protocol knows no pools)."""
    workers = await hub.workers()
    stats = await hub.stats()
    jobs_reads = {b.pool: b.reads.jobs for b in hub.pools}
    heads = await merged_heads(
        jobs_reads, dict.fromkeys(("active", "pending"), MAX_ACTIVE_JOBS // 2)
    )
    active_jobs = [
        {
            "id": unescape(j.id),
            "job_type": j.service_type,
            "status": legacy_status(j.status),
            "priority": j.priority,
            "worker_id": j.worker_id,
            "created_at": seconds(j.created_at),
            "updated_at": seconds(j.claimed_at or j.created_at),
            "progress": j.progress,
        }
        for j in await summaries(jobs_reads, heads["active"] + heads["pending"])
        if j is not None
    ]
    jobs = stats["jobs"]
    return {
        "type": "stats_broadcast",
        "timestamp": time.time(),
        "connections": {
            "clients": sorted(hub.legacy.clients),
            "workers": [w.id for w in workers],
            "monitors": sorted(hub.legacy.monitors),
        },
        "workers": {
            w.id: {
                "status": w.status,
                "connection_status": "connected",
                "is_accepting_jobs": w.state == "active" and not w.busy,
                "capabilities": legacy_capabilities(w.raw_capabilities, w.capabilities.services),
                "supported_job_types": list(w.capabilities.services),
            }
            for w in workers
        },
        "subscriptions": {"stats": [], "job_notifications": [], "jobs": {}},
        "system": {
            "queues": {"priority": jobs["pending"], "standard": 0, "total": jobs["pending"]},
            "jobs": {"total": sum(jobs.values()), "status": jobs, "active_jobs": active_jobs},
            "workers": {
                "total": len(workers),
                "status": stats["workers"]["by_status"],
                "active_workers": [
                    {
                        "id": w.id,
                        "status": w.status,
                        "connected_at": seconds(w.registered_at),
                        "jobs_processed": w.completed,
                        "last_heartbeat": seconds(w.last_heartbeat),
                        "current_job_id": unescape(w.leases[0].job_id) if w.leases else None,
                    }
                    for w in workers
                ],
            },
        },
    }


def legacy_capabilities(document: Any, services: list[str]) -> dict[str, Any]:
    """The worker's capability document with `supported_job_types` (its services) inside,
    where the original page looks for it (`workers[id].capabilities.supported_job_types`)."""
    caps = dict(document) if isinstance(document, dict) else {}
    caps["supported_job_types"] = list(services)
    return caps


def stats_fingerprint(doc: dict[str, Any]) -> bytes:
    """What a `stats_broadcast` says, less what changes without anything happening (its
    timestamp, workers' heartbeat times): equal fingerprints mean nothing changed."""
    system = doc.get("system", {})
    workers = [
        {k: v for k, v in w.items() if k != "last_heartbeat"}
        for w in system.get("workers", {}).get("active_workers", [])
    ]
    return orjson.dumps(
        {k: v for k, v in doc.items() if k not in ("timestamp", "system")}
        | {
            "system": {
                **system,
                "workers": {**system.get("workers", {}), "active_workers": workers},
            }
        },
        option=orjson.OPT_SORT_KEYS,
    )


async def type_position(broker: Broker, job: Job) -> int | None:
    """The original's `job_accepted.position`: 1-based among the pending jobs of the same
    job type, by queue order; None once the job is no longer waiting to be claimed. Counted
    with ZCOUNT over the service's requirement classes, so no job is read."""
    if job.status != JobStatus.PENDING:
        return None
    keys, redis = broker.keys, broker.redis
    score = await redis.zscore(keys.pending, job.id)
    if score is None:
        return None
    class_ids = [
        as_text(c) for c in await redis.zrange(keys.service_classes(job.service_type), 0, -1)
    ]
    async with redis.pipeline(transaction=False) as pipe:
        for class_id in class_ids:
            pipe.zcount(keys.job_class(class_id), "-inf", f"({score!r}")
        ahead = await pipe.execute()
    return sum(int(n) for n in ahead) + 1
