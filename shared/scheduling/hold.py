"""Why a scheduling policy is holding a pending job back, in words ("why is my job
waiting", GET /jobs/{id} and the dashboard).

The claim records a pass-over on the job it passed over (held_by, held_at, and for a
bounded policy held_since and held_until: claim.lua's header). This reads those fields
only; it changes nothing.
"""

from __future__ import annotations

from typing import Any

from shared.job import Job, ms_to_iso
from shared.scheduling.policies import AFFINITY, FAIR, FIT

WHY: dict[str, str] = {
    AFFINITY: "a worker took a job whose models it had loaded",
    FIT: "it was left to a smaller idle worker that can run it",
    FAIR: "its customer has used more than its share of the GPUs while others wait",
}


def describe_hold(job: Job, now_ms: int) -> dict[str, Any] | None:
    """The policy holding `job` back and its bound, or None when no policy passed it over.

    policy: affinity, fit or fair. since: the first pass-over by a bounded policy (when
    strict order would have given the job out). until: from then on no claim that can run
    it passes it over (None for fair share, which has no delay bound: the job goes as its
    customer's share allows). remaining_seconds: until `until` (0 once it ran out)."""
    if job.status != "pending" or not job.held_by:
        return None
    policy = job.held_by
    why = WHY.get(policy, "a scheduling policy chose another job")
    out: dict[str, Any] = {
        "policy": policy,
        "last": ms_to_iso(job.held_at),
        "since": ms_to_iso(job.held_since),
        "until": ms_to_iso(job.held_until),
        "remaining_seconds": None,
    }
    if job.held_until is None:
        out["message"] = f"held back by {policy} at {out['last']}: {why}"
        return out
    left = max(0, job.held_until - now_ms) / 1000
    out["remaining_seconds"] = left
    since = out["since"] or out["last"]
    if left > 0:
        out["message"] = (
            f"held back by {policy} since {since} ({why}); taken by {out['until']} at the "
            f"latest ({left:g} s left)"
        )
    else:
        out["message"] = (
            f"held back by {policy} since {since} ({why}); its bound ran out at "
            f"{out['until']}: the next claim that can run it takes it first"
        )
    return out
