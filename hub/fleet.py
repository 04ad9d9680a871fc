"""Read-only views of the worker fleet, and the answer to "why is my job still waiting?".

Workers register themselves in Redis (`workers` ZSET scored by liveness deadline,
`worker:{id}` hash, `jobs:active:{id}` leases); the hub only reads those keys. The matcher
in shared/matching.py is the same specification the claim script implements, so "no worker
could ever run this" here means the same thing as in the claim.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from redis.asyncio import Redis

from shared.capabilities import Capabilities
from shared.job import Job, ms_to_iso
from shared.keys import Keys
from shared.matching import Demand, RunningCustomer, mismatch

MAX_WORKERS = 5000  # fleet reads are bounded; past this the views are partial


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _json(value: str | None) -> Any:
    if not value:
        return {}
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    customer_id: str
    isolation: str
    claimed_at: int | None


@dataclass(slots=True)
class WorkerView:
    id: str
    alive: bool
    status: str
    state: str
    capabilities: Capabilities
    raw_capabilities: Any
    info: dict[str, Any]
    registered_at: int | None = None
    last_heartbeat: int | None = None
    stopped_at: int | None = None
    leases: list[Lease] = field(default_factory=list)
    claimed: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def slots(self) -> int:
        for key in ("slots", "concurrency", "max_concurrent_jobs"):
            value = self.info.get(key)
            if isinstance(value, int) and value > 0:
                return value
        return 1

    @property
    def busy(self) -> bool:
        return self.status == "busy" or len(self.leases) >= self.slots

    @property
    def running(self) -> list[RunningCustomer]:
        out: list[RunningCustomer] = []
        for lease in self.leases:
            iso = lease.isolation if lease.isolation in ("strict", "loose") else "none"
            out.append(RunningCustomer(lease.customer_id, iso))  # type: ignore[arg-type]
        return out

    def to_public(self, now_ms: int) -> dict[str, Any]:
        age = (now_ms - self.last_heartbeat) / 1000 if self.last_heartbeat else None
        return {
            "id": self.id,
            "alive": self.alive,
            "status": self.status if self.alive else "offline",
            "state": self.state,
            "capabilities": self.raw_capabilities,
            "info": self.info,
            "current_jobs": [lease.job_id for lease in self.leases],
            "heartbeat_age_seconds": round(age, 3) if age is not None else None,
            "last_heartbeat": ms_to_iso(self.last_heartbeat),
            "registered_at": ms_to_iso(self.registered_at),
            "stopped_at": ms_to_iso(self.stopped_at),
            "counters": {
                "claimed": self.claimed,
                "completed": self.completed,
                "failed": self.failed,
            },
        }


def _parse_worker(
    worker_id: str, raw: Mapping[Any, Any], leases: Mapping[Any, Any], alive: bool
) -> WorkerView:
    h = {_text(k): _text(v) for k, v in raw.items()}
    caps_text = h.get("capabilities") or "{}"
    try:
        caps = msgspec.json.decode(caps_text, type=Capabilities)
    except msgspec.MsgspecError:
        caps = Capabilities()
    info = _json(h.get("info"))
    parsed: list[Lease] = []
    for job_id, record in leases.items():
        parts = _text(record).split("|")
        parsed.append(
            Lease(
                job_id=_text(job_id),
                customer_id=parts[1] if len(parts) > 1 else "",
                isolation=parts[2] if len(parts) > 2 else "none",
                claimed_at=_opt_int(parts[3]) if len(parts) > 3 else None,
            )
        )
    return WorkerView(
        id=worker_id,
        alive=alive,
        status=h.get("status", "unknown"),
        state=h.get("state", "active"),
        capabilities=caps,
        raw_capabilities=_json(caps_text),
        info=info if isinstance(info, dict) else {},
        registered_at=_opt_int(h.get("registered_at")),
        last_heartbeat=_opt_int(h.get("last_heartbeat")),
        stopped_at=_opt_int(h.get("stopped_at")),
        leases=parsed,
        claimed=_opt_int(h.get("claimed")) or 0,
        completed=_opt_int(h.get("completed")) or 0,
        failed=_opt_int(h.get("failed")) or 0,
    )


async def redis_now_ms(redis: Redis) -> int:
    """Redis server time: the clock every timestamp in the job and worker hashes uses."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def live_workers(redis: Redis, keys: Keys, limit: int = MAX_WORKERS) -> list[WorkerView]:
    """Registered workers whose liveness deadline has not been reaped yet."""
    entries = await redis.zrange(keys.workers, 0, limit - 1)
    ids = [_text(e) for e in entries]
    return await _load(redis, keys, ids, alive=True)


class FleetCache:
    """The live fleet, re-read at most every `max_age` seconds per hub.

    Reading the fleet costs two commands per worker; "why is my job waiting" on every
    GET of a pending job would otherwise multiply that by every client polling. A second
    of staleness is harmless for an explanation. Concurrent callers share one read.
    """

    def __init__(self, redis: Redis, keys: Keys, max_age: float = 1.0) -> None:
        self._redis = redis
        self._keys = keys
        self._max_age = max_age
        self._value: list[WorkerView] = []
        self._at = float("-inf")
        self._pending: asyncio.Future[list[WorkerView]] | None = None

    async def get(self) -> list[WorkerView]:
        if self._max_age <= 0:
            return await live_workers(self._redis, self._keys)
        if time.monotonic() - self._at < self._max_age:
            return self._value
        if self._pending is not None:
            return await asyncio.shield(self._pending)
        loop = asyncio.get_running_loop()
        self._pending = future = loop.create_future()
        try:
            value = await live_workers(self._redis, self._keys)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._pending = None
        self._value, self._at = value, time.monotonic()
        future.set_result(value)
        return value


async def get_worker(redis: Redis, keys: Keys, worker_id: str) -> WorkerView | None:
    """Any worker whose hash still exists, live or offline (kept for the retention TTL)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(keys.workers, worker_id)
        pipe.hgetall(keys.worker(worker_id))
        pipe.hgetall(keys.leases(worker_id))
        score, raw, leases = await pipe.execute()
    if not raw:
        return None
    return _parse_worker(worker_id, raw, leases or {}, alive=score is not None)


async def _load(redis: Redis, keys: Keys, ids: Sequence[str], *, alive: bool) -> list[WorkerView]:
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(keys.worker(worker_id))
            pipe.hgetall(keys.leases(worker_id))
        replies = await pipe.execute()
    out: list[WorkerView] = []
    for i, worker_id in enumerate(ids):
        raw, leases = replies[2 * i], replies[2 * i + 1]
        if raw:
            out.append(_parse_worker(worker_id, raw, leases or {}, alive=alive))
    return out


def why_waiting(
    job: Job, workers: Sequence[WorkerView], ahead: int | None, now_ms: int
) -> dict[str, Any]:
    """Explain a pending job's wait: `reason` is a stable code, `message` a sentence.

    Codes: backing_off (a retry waits out its backoff), no_workers, no_capable_worker
    (no registered worker could ever run it; the message names the unmet requirement),
    workers_paused, workers_busy (capable workers exist and are all busy: how many), queued
    (capable workers are idle; it will be claimed shortly).
    """
    svc = job.service_type
    live = [w for w in workers if w.alive]
    counts: dict[str, int] = {"live": len(live), "offering": 0, "capable": 0, "busy": 0, "idle": 0}

    def answer(reason: str, message: str) -> dict[str, Any]:
        return {"reason": reason, "message": message, "workers": counts, "jobs_ahead": ahead}

    if job.retry_at is not None and job.retry_at > now_ms:
        return answer(
            "backing_off",
            f"attempt {job.attempts} failed; retry backs off until {ms_to_iso(job.retry_at)}",
        )
    if not live:
        return answer("no_workers", "no worker is registered")
    demand = Demand(svc, job.customer_id or "", job.requirements)
    offering = [w for w in live if svc in w.capabilities.services]
    counts["offering"] = len(offering)
    if not offering:
        return answer("no_capable_worker", f"no worker offers service {svc!r}")
    reasons: Counter[str] = Counter()
    capable: list[WorkerView] = []
    for w in offering:
        why = mismatch(demand, w.capabilities)
        if why is None:
            capable.append(w)
        else:
            reasons[why] += 1
    counts["capable"] = len(capable)
    if not capable:
        why, n = reasons.most_common(1)[0]
        return answer(
            "no_capable_worker",
            f"no worker offers service {svc!r} that can run it: {why} "
            f"({n} of {len(offering)} offering it)",
        )
    active = [w for w in capable if w.state == "active"]
    if not active:
        return answer("workers_paused", f"{len(capable)} capable worker(s), all paused or draining")
    idle = [w for w in active if not w.busy and mismatch(demand, w.capabilities, w.running) is None]
    counts["idle"] = len(idle)
    counts["busy"] = len(active) - len(idle)
    if not idle:
        return answer("workers_busy", f"{len(active)} capable worker(s), all busy")
    ahead_text = f"; {ahead} job(s) ahead in the queue" if ahead else ""
    return answer("queued", f"{len(idle)} capable worker(s) idle{ahead_text}")
