"""The `fit` policy's view of the fleet: how big a worker is, and which idle smaller worker
could run a job instead (the specification that shared/lua/include/idle_workers.lua follows;
tests/integration/test_idle_workers.py holds the two equal).

A worker is idle from the claim that found nothing for it until its next successful claim
(or until it leaves, dies, or is paused or drained). The claim leaves a job that such a
worker, strictly smaller than the claimant, can run to that worker and wakes it; a job that
no smaller idle worker can run (it needs the claimant's GPU memory, a model only it has, its
compliance tag) is never held back, so a big worker ends up preferring the jobs only it can
do. Only the FIT_LOOK largest of the smaller idle workers are examined, so the check costs
O(log n + FIT_LOOK) in Redis however many workers idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from shared.capabilities import Capabilities
from shared.matching import Demand, RunningCustomer, mismatch

# How many of the largest-but-smaller idle workers one check examines.
FIT_LOOK: Final = 3
# The cost tie-break's range: thousandths of a unit per hour, up to 999.999 per hour.
_COST_STEPS: Final = 1_000_000


def worker_size(caps: Capabilities) -> int:
    """The idle index's score: the largest GPU's memory in tenths of a GB, then the cost per
    hour in thousandths as the tie-break. A job needs its memory on one GPU, so the largest
    card bounds which jobs only this worker can run; between equal cards the dearer one is
    the one to keep free. A CPU-only worker is the smallest (its cost only)."""
    memory = max((g.memory_gb for g in caps.hardware.gpus), default=0.0)
    cost = min(max(math.floor(caps.cost.per_hour * 1000), 0), _COST_STEPS - 1)
    return math.floor(memory * 10) * _COST_STEPS + cost


@dataclass(frozen=True, slots=True)
class IdleWorker:
    """An idle worker as the index holds it: the capabilities its empty claim used, the
    leases it still holds (customer isolation), and whether it is live and may claim."""

    id: str
    caps: Capabilities
    running: Sequence[RunningCustomer] = ()
    live: bool = True

    @property
    def size(self) -> int:
        return worker_size(self.caps)


def fit_blocker(demand: Demand, claimant: Capabilities, idle: Sequence[IdleWorker]) -> str | None:
    """The idle worker a job of `demand` is left to instead of `claimant`, or None.

    Among the idle workers offering the job's service and strictly smaller than the claimant
    (two equal workers never defer to each other), the FIT_LOOK largest are examined, the
    largest first; the first that is live and can run the job wins. Equal sizes are
    examined in reverse id order, as Redis orders equal scores in ZREVRANGEBYSCORE."""
    size = worker_size(claimant)
    smaller = sorted(
        (w for w in idle if demand.service_type in w.caps.services and w.size < size),
        key=lambda w: (w.size, w.id),
        reverse=True,
    )
    for worker in smaller[:FIT_LOOK]:
        if worker.live and mismatch(demand, worker.caps, worker.running) is None:
            return worker.id
    return None
