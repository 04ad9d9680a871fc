"""`bench floor`: each client stack's round trip, measured against a real Redis, so a missed
ratio target in `bench peers` can be set against what one round trip costs that day; the
relay between two processes (bench/relay.py), the least a job's round trip costs, also in the
shape bench-peers' W3 measures this project in; and a drain
with one slot at its least, the least a job costs a worker with one slot."""

from __future__ import annotations

from bench.floor import W3_SHAPE, measure
from bench.report import parse_tables


async def test_floor_measures_every_client_stack_and_the_submit_split() -> None:
    text = await measure(50)
    (floor,) = parse_tables(text)
    measured = {row[0]: float(row[1]) for row in floor.rows}
    for stack in (
        "redis-py sync PING",
        "raw asyncio Protocol PING",
        "redis-py asyncio PING",
        "redis-py asyncio EVALSHA 'return 1'",
        "Broker.submit, whole call",
        "  of which Redis runs submit.lua",
        "relay round trip, 2 processes, redis-py sync (p50)",
        "relay round trip, 2 processes, redis-py asyncio (p50)",
        f"{W3_SHAPE} (p50)",
        "drain, 1 slot: Broker.complete_and_claim per job, nothing else",
        "  of which Redis runs complete_claim.lua",
    ):
        assert measured[stack.strip()] > 0, stack
    # The server's share is part of the whole call, never more.
    assert measured["of which Redis runs submit.lua"] < measured["Broker.submit, whole call"]
    drain = "drain, 1 slot: Broker.complete_and_claim per job, nothing else"
    assert measured["of which Redis runs complete_claim.lua"] < measured[drain]
    # A relay is two processes' round trips: a percentile, never below its median.
    for label in (
        "relay round trip, 2 processes, redis-py sync",
        "relay round trip, 2 processes, redis-py asyncio",
        W3_SHAPE,
    ):
        assert measured[f"{label} (p99)"] >= measured[f"{label} (p50)"]
