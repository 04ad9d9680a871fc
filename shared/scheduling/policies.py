"""The scheduling settings: which policies are on and their bounds, as the claim takes them.

SCHEDULING_POLICIES names the policies a worker's claims apply (all three by default;
`none`: strict order, exactly the claim of old). The bounds and the window are read by the
same broker settings that hub and worker share (shared/settings.py); `claim_argument` packs
them into the one ARGV the claim scripts read (include/choose.lua `parse_scheduling`).
"""

from __future__ import annotations

from typing import Final

from shared.config import ConfigError
from shared.setting import Setting

AFFINITY: Final = "affinity"
FIT: Final = "fit"
FAIR: Final = "fair"
# In the order the chooser applies them (shared/scheduling/chooser.py).
POLICY_NAMES: Final = (FIT, AFFINITY, FAIR)
# The policies on when SCHEDULING_POLICIES is unset: all three. On the fleet replay
# (python -m bench fleet, docs/bench-fleet.md) they beat strict order on every target measured
# but cold loads, where they still save over a third (README "Scheduling policies").
DEFAULT_POLICIES: Final[tuple[str, ...]] = POLICY_NAMES
# The value that turns every policy off (strict order): a blank one means the default.
NONE: Final = "none"
# Policies whose pass-overs are bounded in time (fair share has no delay bound: a customer
# over its share waits while others with matching work are under theirs).
BOUNDED: Final = (AFFINITY, FIT)


def canonical_policies(name: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` validated and in POLICY_NAMES order, each once (`none` alone: none of them);
    ConfigError naming `name` (the variable) for an unknown one, or `none` with others."""
    lowered = {n.strip().lower() for n in names if n.strip()}
    if NONE in lowered:
        if lowered != {NONE}:
            raise ConfigError(name, f"{NONE!r} turns every policy off: name it alone")
        return ()
    unknown = sorted(lowered - set(POLICY_NAMES))
    if unknown:
        raise ConfigError(
            name, f"unknown policy {unknown[0]!r}: expected some of {', '.join(POLICY_NAMES)}"
        )
    return tuple(p for p in POLICY_NAMES if p in lowered)


def _parse_policies(name: str, value: str) -> tuple[str, ...]:
    return canonical_policies(name, tuple(value.split(",")))


def policies_setting(name: str, *, doc: str) -> Setting[tuple[str, ...]]:
    return Setting(
        name,
        DEFAULT_POLICIES,
        doc,
        _parse_policies,
        bounds=f"any of {', '.join(POLICY_NAMES)}, or {NONE}",
        shown=",".join(DEFAULT_POLICIES),
    )


def claim_argument(
    policies: tuple[str, ...],
    *,
    window: int,
    affinity_max_delay: float,
    fit_max_delay: float,
    half_life: float,
    scan: int = 16,
) -> str:
    """The claim scripts' scheduling ARGV: '' with no policy on (strict order), else
    'policies|window|affinity_ms|fit_ms|half_life_ms|scan' (include/choose.lua reads it;
    scan: the most classes a claim examines beyond those strict order examines)."""
    if not policies:
        return ""
    return "|".join(
        (
            ",".join(policies),
            str(window),
            str(int(affinity_max_delay * 1000)),
            str(int(fit_max_delay * 1000)),
            str(int(half_life * 1000)),
            str(scan),
        )
    )
