"""Reads of fair-share state (SCHEDULING_POLICIES=fair): each customer's decayed usage, its
weight and its share, for the dashboards.

The claim charges usage where a lease ends (shared/lua/include/fair.lua) and the hubs
publish the weights (publish_policy.lua); this only reads both, decaying usage to Redis's
clock with the same arithmetic (shared/scheduling/usage.py). Bounded: at most
`MAX_CUSTOMERS` customers are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.keys import Keys
from shared.redis_clock import redis_now_ms
from shared.redis_types import RedisClient
from shared.scheduling.usage import Usage, load
from shared.text import as_text

MAX_CUSTOMERS = 1000
ANY_CUSTOMER = "*"  # the published weight of customers the hub names in no tier


@dataclass(frozen=True, slots=True)
class CustomerShare:
    """usage: GPU-seconds decayed to now. share: its part of all customers' usage (0..1).
    entitled: its weight's part of the weights of the customers listed (0..1). load:
    usage / weight, what fair share ranks by (the lowest goes first)."""

    customer: str
    usage: float
    weight: float
    share: float
    entitled: float
    load: float

    def to_public(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "usage_gpu_seconds": round(self.usage, 3),
            "weight": self.weight,
            "share": round(self.share, 4),
            "entitled": round(self.entitled, 4),
            "load": round(self.load, 3),
        }


class FairShareReads:
    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def shares(self, half_life: float) -> list[CustomerShare]:
        """Every customer with usage, heaviest load first; `half_life` in seconds (the
        reader's FAIR_SHARE_HALF_LIFE_SECONDS)."""
        usage = await self._bounded(self._keys.fair_usage)
        weights = await self._bounded(self._keys.fair_weights)
        now = await redis_now_ms(self._redis, self._keys.pending)
        half_life_ms = int(half_life * 1000)
        default = _weight(weights.get(ANY_CUSTOMER))
        rows = []
        for customer, stored in usage.items():
            weight = _weight(weights.get(customer), default)
            rows.append((customer, Usage.parse(stored).at(now, half_life_ms), weight))
        total_usage = sum(u for _, u, _ in rows)
        total_weight = sum(w for _, _, w in rows)
        out = [
            CustomerShare(
                customer=c,
                usage=u,
                weight=w,
                share=u / total_usage if total_usage > 0 else 0.0,
                entitled=w / total_weight if total_weight > 0 else 0.0,
                load=load(u, w),
            )
            for c, u, w in rows
        ]
        return sorted(out, key=lambda s: (-s.load, s.customer))

    async def _bounded(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        async for field, value in self._redis.hscan_iter(key, count=200):
            out[as_text(field)] = as_text(value)
            if len(out) >= MAX_CUSTOMERS:
                break
        return out


def _weight(text: str | None, default: float = 1.0) -> float:
    try:
        value = float(text) if text is not None else default
    except ValueError:
        return default
    return value if value > 0 else default
