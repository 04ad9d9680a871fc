"""Fair-share usage: GPU-seconds per customer with exponential decay.

Stored per pool as one hash field per customer, "value|ms": the usage as of `ms` (Redis
time). Every read and write first decays the value to now, value * 2^(-(now - ms) / half
life), so one field per customer suffices and nothing needs a periodic sweep
(include/fair.lua does the same in the scripts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """GPU-seconds as of `at_ms`."""

    value: float
    at_ms: int

    def at(self, now_ms: int, half_life_ms: int) -> float:
        """The usage decayed to `now_ms` (never grown: a clock step back counts as no time)."""
        elapsed = max(0, now_ms - self.at_ms)
        if half_life_ms <= 0:
            return 0.0
        return self.value * math.pow(2.0, -elapsed / half_life_ms)

    def charged(self, gpu_seconds: float, now_ms: int, half_life_ms: int) -> Usage:
        """This usage decayed to `now_ms` plus `gpu_seconds`."""
        return Usage(self.at(now_ms, half_life_ms) + gpu_seconds, now_ms)

    @classmethod
    def parse(cls, stored: str | None) -> Usage:
        """The stored "value|ms" form; none (or a damaged one) is no usage."""
        if not stored:
            return cls(0.0, 0)
        value, _, at = stored.partition("|")
        try:
            return cls(float(value), int(float(at or "0")))
        except ValueError:
            return cls(0.0, 0)


def load(usage: float, weight: float) -> float:
    """What fair share ranks customers by: usage per unit of weight (a weight of 0 or less
    counts as 1, so a misconfigured tier never divides by zero)."""
    return usage / (weight if weight > 0 else 1.0)
