"""A worker as its Redis records describe it: the `worker:{id}` hash and its leases.

Workers write these records themselves (register, heartbeat, claim scripts); this module only
decodes them, tolerantly: a record a newer worker wrote, or one half-expired, still gives a
view instead of an error, because the fleet listing must not fail for one odd worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from shared.capabilities import Capabilities
from shared.job import ms_to_iso
from shared.matching import RunningCustomer
from shared.text import as_text


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
    # In the idle-worker index (shared/lua/include/idle_workers.lua): its last claim found
    # nothing, so the `fit` policy may leave jobs to it. Set by the scripts at once, while
    # `status` is what the worker's last heartbeat reported.
    idle: bool = False

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
            # Loaded on the worker now, most recently used first (README, Warm models).
            "warm_models": list(self.capabilities.warm_models),
            "info": self.info,
            "current_jobs": [lease.job_id for lease in self.leases],
            "idle": self.idle,
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


def parse_worker(
    worker_id: str, raw: Mapping[Any, Any], leases: Mapping[Any, Any], alive: bool
) -> WorkerView:
    """Build a view from the `worker:{id}` hash and the `jobs:active:{id}` lease hash
    (job id -> "token|customer|isolation|claimed_ms")."""
    h = {as_text(k): as_text(v) for k, v in raw.items()}
    caps_text = h.get("capabilities") or "{}"
    try:
        caps = msgspec.json.decode(caps_text, type=Capabilities)
    except msgspec.MsgspecError:
        caps = Capabilities()
    info = _json(h.get("info"))
    parsed: list[Lease] = []
    for job_id, record in leases.items():
        parts = as_text(record).split("|")
        parsed.append(
            Lease(
                job_id=as_text(job_id),
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
        idle=alive and "idle_in" in h,
    )
