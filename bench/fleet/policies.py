"""The policy sets compared, and the broker settings each run is made with.

The policy set is the one thing that differs between runs: `broker_settings` turns it into
the BrokerSettings that every Broker of the run (the submitter's and each worker
process's) is made with. A policy this build of the broker does not have makes its run
"not available" rather than a run of something else.
"""

from __future__ import annotations

import dataclasses

from shared.settings import BrokerSettings

RUNS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "affinity": ("affinity",),
    "fit": ("fit",),
    "fair": ("fair",),
    "all": ("affinity", "fit", "fair"),
}

# Worker settings of every run. Leases outlive the run: the simulated workers send no
# heartbeats and nothing reaps them. A real worker waits IDLE_POLL_SECONDS (default 5 s) for
# a wake-up before it claims anyway; at a 60x compression that would be 5 trace minutes, so
# the fleet's is 1 s (a trace minute at 60x).
LEASE_TIMEOUT_S = 3600.0
IDLE_POLL_S = 1.0


def _policy_field() -> str | None:
    names = {f.name for f in dataclasses.fields(BrokerSettings)}
    return "scheduling_policies" if "scheduling_policies" in names else None


def available(policies: tuple[str, ...]) -> bool:
    return not policies or _policy_field() is not None


def broker_settings(policies: tuple[str, ...]) -> BrokerSettings | None:
    """The settings of a run with `policies` on; None when this broker lacks them."""
    base = BrokerSettings(lease_timeout=LEASE_TIMEOUT_S, idle_poll=IDLE_POLL_S)
    field = _policy_field()
    if field is None:
        return base if not policies else None
    return dataclasses.replace(base, **{field: policies})
