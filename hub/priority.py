"""Effective priority: what the queue orders by, derived from what the client asked for.

The client's `priority` (0..100) is only the starting point. The hub adds

    effective = clamp(requested + tier_bonus + urgency + aging, 0, 1000)

    tier_bonus = CUSTOMER_TIERS[tier of the job's customer]      (0 when none applies)
    urgency    = 0                                   with no deadline, or more than
                                                     HUB_URGENCY_WINDOW_SECONDS left
               = floor(HUB_URGENCY_MAX_POINTS * (1 - left / window))  inside the window
               = HUB_URGENCY_MAX_POINTS              once the deadline has passed
    aging      = min(HUB_AGING_MAX_POINTS,
                     floor(minutes waited * HUB_AGING_POINTS_PER_MINUTE))

    and, when the submitting client token carries `max_priority=N`, never more than N.

Why each term exists: tiers let paying customers go first without letting them pick
priorities outside the public 0..100 range; urgency moves a job forward as its deadline
approaches, so a low-priority job with a deadline still meets it when the fleet has room;
aging guarantees that no pending job starves behind a steady stream of higher-priority
work (after HUB_AGING_MAX_POINTS / HUB_AGING_POINTS_PER_MINUTE minutes a priority-0 job
competes with a fresh priority-HUB_AGING_MAX_POINTS one).

Urgency is a service clients may use: a deadline moves a job forward as it approaches. It
cannot be bought outright: a deadline already past at submission is refused (a past
deadline would earn the full bonus at once), and the token ceiling, stamped on the job as
`max_priority`, bounds everything the formula adds, at submission and at every re-scoring.

Submission computes the formula once (waited = 0); the maintenance loop recomputes it for
waiting jobs and calls `Broker.reprioritize` for those whose value changed. The function is
pure and depends only on the job and the clock, so several hubs computing it at the same
time write the same value: running it twice is harmless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import InvalidInput
from shared.job import MAX_EFFECTIVE_PRIORITY, JobRequest
from shared.setting import integer, number
from shared.setting_section import Section

DEFAULT_TIER = "default"

# The formula's knobs are settings, declared on their fields; hub/settings.py reads them.
AGING_AND_URGENCY = Section("priority: aging and urgency")


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    """The knobs of the formula above (see the module docstring)."""

    tier_bonus: Mapping[str, int] = field(default_factory=dict)
    customer_tiers: Mapping[str, str] = field(default_factory=dict)
    # Fair share's weight per tier (FAIR_SHARE_WEIGHTS; a tier absent weighs 1): not part
    # of the formula, but the same tiers, so it lives with them.
    tier_weight: Mapping[str, float] = field(default_factory=dict)
    aging_points_per_minute: float = AGING_AND_URGENCY.field(
        number(
            "HUB_AGING_POINTS_PER_MINUTE",
            1.0,
            lo=0,
            hi=1000,
            doc="Priority points a waiting job gains per minute, so nothing starves",
        )
    )
    aging_max_points: int = AGING_AND_URGENCY.field(
        integer("HUB_AGING_MAX_POINTS", 100, lo=0, hi=1000, doc="Most points aging adds")
    )
    urgency_max_points: int = AGING_AND_URGENCY.field(
        integer(
            "HUB_URGENCY_MAX_POINTS",
            100,
            lo=0,
            hi=1000,
            doc="Most points a near or passed deadline adds",
        )
    )
    urgency_window_seconds: float = AGING_AND_URGENCY.field(
        number(
            "HUB_URGENCY_WINDOW_SECONDS",
            3600.0,
            lo=1,
            hi=365 * 86400,
            doc="How long before its deadline a job starts gaining urgency",
        )
    )

    def tier_of(self, customer_id: str | None) -> str | None:
        """A customer's tier: its assignment, else the tier named 'default' if configured."""
        if customer_id and customer_id in self.customer_tiers:
            return self.customer_tiers[customer_id]
        return DEFAULT_TIER if DEFAULT_TIER in self.tier_bonus else None

    def fair_share_weights(self) -> dict[str, float]:
        """customer -> fair-share weight for every customer with a tier, plus "*": the
        weight of any other customer (the 'default' tier's, else 1). Published for the
        claim to read (publish_policy.lua; shared/scheduling/chooser.py uses them)."""
        out = {c: self.tier_weight.get(t, 1.0) for c, t in self.customer_tiers.items()}
        default = self.tier_of(None)
        out["*"] = self.tier_weight.get(default, 1.0) if default is not None else 1.0
        return out

    def bonus(self, customer_id: str | None) -> int:
        tier = self.tier_of(customer_id)
        return self.tier_bonus.get(tier, 0) if tier is not None else 0

    def urgency(self, deadline_ms: int | None, now_ms: int) -> int:
        if deadline_ms is None or self.urgency_max_points <= 0:
            return 0
        left = (deadline_ms - now_ms) / 1000.0
        if left <= 0:
            return self.urgency_max_points
        window = self.urgency_window_seconds
        if window <= 0 or left >= window:
            return 0
        return math.floor(self.urgency_max_points * (1.0 - left / window))

    def aging(self, created_ms: int, now_ms: int) -> int:
        if self.aging_points_per_minute <= 0 or self.aging_max_points <= 0:
            return 0
        minutes = max(0, now_ms - created_ms) / 60_000.0
        return min(self.aging_max_points, math.floor(minutes * self.aging_points_per_minute))

    def effective(
        self,
        requested: int,
        customer_id: str | None,
        *,
        deadline_ms: int | None,
        created_ms: int,
        now_ms: int,
        ceiling: int | None = None,
    ) -> int:
        """The effective priority, clamped to the queue's 0..1000 range and to `ceiling`
        (the submitting token's max_priority) when there is one."""
        value = (
            requested
            + self.bonus(customer_id)
            + self.urgency(deadline_ms, now_ms)
            + self.aging(created_ms, now_ms)
        )
        top = MAX_EFFECTIVE_PRIORITY if ceiling is None else min(ceiling, MAX_EFFECTIVE_PRIORITY)
        return max(0, min(top, value))

    @property
    def time_dependent(self) -> bool:
        """Whether waiting jobs need re-scoring at all (aging or urgency switched on)."""
        aging_on = self.aging_points_per_minute > 0 and self.aging_max_points > 0
        return aging_on or self.urgency_max_points > 0


def deadline_ms(req: JobRequest) -> int | None:
    return int(req.deadline.timestamp() * 1000) if req.deadline is not None else None


def refuse_past_deadline(req: JobRequest, now_ms: int, field: str = "") -> None:
    """A deadline must lie ahead at submission: one already past would earn the whole
    urgency bonus at once, a free +HUB_URGENCY_MAX_POINTS for any client. `field` prefixes
    the field name (`jobs[3].` in a batch)."""
    deadline = deadline_ms(req)
    if deadline is not None and deadline <= now_ms:
        raise InvalidInput(f"{field}deadline", "is in the past: give a time still ahead")
