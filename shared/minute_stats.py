"""What a `stats:{minute}` hash holds besides its counters, and how to read it back.

The scripts keep one hash per minute (Redis time), expiring a day later:

- counters (`submitted`, `claimed`, `completed`, `failed`, `retried`, `cancelled`, `run_ms`),
  bumped by the script that makes the change (include/events.lua `bump_stat`);
- `wait:{bucket}`: how many claims in that minute waited a time in that bucket (the claim
  bumps it, `bump_wait`). A histogram rather than a list of waits, so it costs one HINCRBY
  per claim, stays small (a few dozen fields at most) and merges across hubs and workers;
- `depth_at` and `depth:{service}`: the claimable pending jobs of each service, sampled once
  in the minute by whichever hub's maintenance tick gets there first (sample_depth.lua).
  Only the deepest services are named; the rest are summed under OTHER_SERVICES, so
  client-chosen service names cannot grow the hash.

Wait buckets are logarithmic with four per doubling (about 19% wide), exact below 4 ms:
bucket b holds waits in `bucket_bounds(b)`. `wait_bucket` here and `wait_bucket` in
include/events.lua compute the same thing (tests/integration/test_minute_stats.py runs both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

WAIT_PREFIX: Final = "wait:"
DEPTH_PREFIX: Final = "depth:"
DEPTH_AT: Final = "depth_at"
# Not a valid service name (shared.validation.SERVICE_PATTERN), so it cannot collide.
OTHER_SERVICES: Final = "(other)"


def wait_bucket(ms: int) -> int:
    """The histogram bucket of a wait of `ms` milliseconds."""
    if ms < 4:
        return max(0, ms)
    mantissa, exponent = math.frexp(ms)  # ms = mantissa * 2**exponent, 0.5 <= mantissa < 1
    return 4 * exponent - 12 + int(mantissa * 8)


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """The waits (ms) bucket `bucket` holds: lo inclusive, hi exclusive."""
    if bucket < 4:
        return bucket, bucket + 1
    shift = bucket // 4 - 1
    return (4 + bucket % 4) << shift, (5 + bucket % 4) << shift


def bucket_value(bucket: int) -> int:
    """The one value that stands for a bucket: its middle (exact for the 1 ms buckets)."""
    lo, hi = bucket_bounds(bucket)
    return (lo + hi - 1) // 2 if hi - lo > 1 else lo


def histogram_percentile(counts: Mapping[int, int], p: float) -> int | None:
    """Nearest-rank percentile `p` (0-100] of a wait histogram, as its bucket's value;
    None for an empty histogram."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(total * p / 100))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(counts))  # unreachable: seen ends at total >= rank


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """One minute's hash, decoded. `depth` is None when no hub sampled that minute."""

    counters: dict[str, int]
    waits: dict[int, int]
    depth: dict[str, int] | None


def parse_minute(raw: Mapping[str, int]) -> MinuteStats:
    counters: dict[str, int] = {}
    waits: dict[int, int] = {}
    depth: dict[str, int] = {}
    for name, value in raw.items():
        if name.startswith(WAIT_PREFIX):
            bucket = name[len(WAIT_PREFIX) :]
            if bucket.isdigit():
                waits[int(bucket)] = value
        elif name.startswith(DEPTH_PREFIX):
            depth[name[len(DEPTH_PREFIX) :]] = value
        elif name != DEPTH_AT:
            counters[name] = value
    return MinuteStats(counters, waits, depth if DEPTH_AT in raw else None)
