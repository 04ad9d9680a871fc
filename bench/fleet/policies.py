"""The policy sets compared, and the broker settings each run is made with.

The policy set is the one thing that differs between runs: `broker_settings` turns it into
the BrokerSettings that every Broker of the run (the submitter's and each worker
process's) is made with (SCHEDULING_POLICIES and its bounds, shared/scheduling/). A policy
this build of the broker does not have makes its run "not available" rather than a run of
something else.

Bounds and the fair-share half-life are the settings' defaults read as trace seconds (the
simulated jobs are trace-second sized), so the broker gets them divided by the compression.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from bench.fleet.trace import customer_weights
from shared.broker import Broker
from shared.scheduling.policies import AFFINITY, FAIR, FIT, POLICY_NAMES
from shared.settings import BrokerSettings

RUNS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "affinity": (AFFINITY,),
    "fit": (FIT,),
    "fair": (FAIR,),
    "all": (AFFINITY, FIT, FAIR),
}

# Worker settings of every run. Leases outlive the run: the simulated workers send no
# heartbeats and nothing reaps them. A real worker waits IDLE_POLL_SECONDS (default 5 s) for
# a wake-up before it claims anyway; at a 60x compression that would be 5 trace minutes, so
# the fleet's is 1 s (a trace minute at 60x).
LEASE_TIMEOUT_S = 3600.0
IDLE_POLL_S = 1.0
# The events stream keeps a whole run (a few events per job), so that the replay reads every
# job's 'claimed' event (how long a policy held it) at the end.
EVENTS_KEPT = 1_000_000

_DEFAULTS = BrokerSettings()
# In trace seconds (see above): AFFINITY_MAX_DELAY_SECONDS, FIT_MAX_DELAY_SECONDS and
# FAIR_SHARE_HALF_LIFE_SECONDS at their defaults.
BOUNDS_S: dict[str, float] = {
    AFFINITY: _DEFAULTS.affinity_max_delay,
    FIT: _DEFAULTS.fit_max_delay,
}
HALF_LIFE_S = _DEFAULTS.fair_share_half_life


def available(policies: tuple[str, ...]) -> bool:
    """Whether this broker knows every policy named (the others' runs are 'not available')."""
    return set(policies) <= set(POLICY_NAMES)


def broker_settings(policies: tuple[str, ...], factor: float) -> BrokerSettings | None:
    """The settings of a run with `policies` on at `factor` compression; None when this
    broker lacks one of them."""
    if not available(policies):
        return None
    return dataclasses.replace(
        _DEFAULTS,
        lease_timeout=LEASE_TIMEOUT_S,
        idle_poll=IDLE_POLL_S,
        events_max=EVENTS_KEPT,
        scheduling_policies=policies,
        affinity_max_delay=BOUNDS_S[AFFINITY] / factor,
        fit_max_delay=BOUNDS_S[FIT] / factor,
        fair_share_half_life=HALF_LIFE_S / factor,
    )


def bounds_s(policies: tuple[str, ...]) -> float | None:
    """The longest a policy may pass over a job, trace seconds: the largest bound of the
    bounded policies on (a job held by two has the earlier deadline of the two, counted from
    the same first pass-over); None: none is on (fair share has no delay bound)."""
    on = [BOUNDS_S[p] for p in policies if p in BOUNDS_S]
    return max(on) if on else None


def prepare_run(policies: tuple[str, ...]) -> Callable[[Broker], Awaitable[None]]:
    """What a hub does before the fleet claims: publish the fair-share weights (customer ->
    its tier's weight), in every run so that only the policies differ."""

    async def prepare(broker: Broker) -> None:
        await broker.publish_policy("bench-fleet", customer_weights())

    return prepare
