"""The effective-priority formula (hub/priority.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.priority import PriorityPolicy

MIN = 60_000
NOW = 1_000_000_000_000

POLICY = PriorityPolicy(
    tier_bonus={"gold": 20, "silver": 10, "bronze": -5},
    customer_tiers={"acme": "gold", "globex": "silver", "initech": "bronze"},
    aging_points_per_minute=1.0,
    aging_max_points=100,
    urgency_max_points=100,
    urgency_window_seconds=3600,
)


@pytest.mark.parametrize(
    ("requested", "customer", "deadline_in_s", "waited_min", "expected"),
    [
        (50, None, None, 0, 50),  # nothing applies
        (50, "acme", None, 0, 70),  # gold tier
        (50, "globex", None, 0, 60),  # silver tier
        (50, "initech", None, 0, 45),  # a negative bonus
        (50, "unknown", None, 0, 50),  # no tier, no 'default' tier
        (50, None, 7200, 0, 50),  # deadline outside the window
        (50, None, 1800, 0, 100),  # halfway through the window: +50
        (50, None, 360, 0, 140),  # 90 % through: +90
        (50, None, -10, 0, 150),  # overdue: the full bonus
        (50, None, None, 30, 80),  # waited 30 min: +30
        (50, None, None, 30.9, 80),  # whole points only
        (50, None, None, 500, 150),  # aging is capped
        (0, "initech", None, 0, 0),  # clamped at 0
        (100, "acme", -1, 10_000, 320),  # every bonus at once
    ],
)
def test_formula(
    requested: int,
    customer: str | None,
    deadline_in_s: float | None,
    waited_min: float,
    expected: int,
) -> None:
    deadline = None if deadline_in_s is None else NOW + int(deadline_in_s * 1000)
    created = NOW - int(waited_min * MIN)
    got = POLICY.effective(
        requested, customer, deadline_ms=deadline, created_ms=created, now_ms=NOW
    )
    assert got == expected


def test_default_tier_applies_to_unassigned_customers() -> None:
    policy = PriorityPolicy(tier_bonus={"default": 5, "gold": 20}, customer_tiers={"a": "gold"})
    assert policy.bonus("a") == 20
    assert policy.bonus("b") == 5
    assert policy.bonus(None) == 5


def test_clamped_to_the_queue_range() -> None:
    policy = PriorityPolicy(tier_bonus={"default": 1000})
    assert policy.effective(100, None, deadline_ms=None, created_ms=NOW, now_ms=NOW) == 1000


def test_switching_aging_and_urgency_off() -> None:
    policy = PriorityPolicy(aging_points_per_minute=0, urgency_max_points=0)
    assert not policy.time_dependent
    assert policy.effective(7, None, deadline_ms=NOW - 1, created_ms=0, now_ms=NOW) == 7


@given(
    requested=st.integers(0, 100),
    customer=st.sampled_from([None, "acme", "globex", "initech", "x"]),
    deadline=st.one_of(st.none(), st.integers(-(10**7), 10**7)),
    waited=st.integers(0, 10**9),
    later=st.integers(0, 10**8),
)
def test_bounded_and_never_decreasing_while_waiting(
    requested: int, customer: str | None, deadline: int | None, waited: int, later: int
) -> None:
    created = NOW - waited
    dl = None if deadline is None else NOW + deadline
    now = POLICY.effective(requested, customer, deadline_ms=dl, created_ms=created, now_ms=NOW)
    then = POLICY.effective(
        requested, customer, deadline_ms=dl, created_ms=created, now_ms=NOW + later
    )
    assert 0 <= now <= then <= 1000
    higher = POLICY.effective(
        min(100, requested + 1), customer, deadline_ms=dl, created_ms=created, now_ms=NOW
    )
    assert higher >= now
