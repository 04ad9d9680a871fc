"""The chaos matrix, webhook delivery: a hub dies in the middle of delivering. The test's
docstring says what it does ("Does:") and what it proves ("Asserts:") for RELIABILITY.md
(see scripts/reliability.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from shared.webhook_queue import GROUP
from tests.chaos.clients import sim_job, submit_batch, wait_all_finished
from tests.chaos.support import CLIENT, Chaos
from tests.helpers import wait_until
from tests.webhook_support import SECRET, Delivery, Receiver, receiving

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

# The kill comes at 100 deliveries with 150 still to make: a backlog, so A holds some when
# it dies. 500 proved no more, and the 400 left at the kill took B alone 10 s.
JOBS = 250
RECEIVER_MS = 100  # each answer takes this long: a backlog, so A holds deliveries at the kill
CLAIM_IDLE_S = 3.0
WEBHOOK_ENV = {
    "HUB_WEBHOOK_SECRET": SECRET,
    "HUB_WEBHOOK_ALLOW": "127.0.0.1/32",
    "HUB_WEBHOOK_TIMEOUT_SECONDS": "2",
    "HUB_WEBHOOK_CLAIM_IDLE_SECONDS": f"{CLAIM_IDLE_S:g}",
    "HUB_WEBHOOK_CONCURRENCY": "4",
    "HUB_WEBHOOK_RETRY_SECONDS": "0.1",
    "HUB_WEBHOOK_RETRY_MAX_SECONDS": "0.5",
}


async def held_by(chaos: Chaos, pid: int) -> int:
    """Entries of the delivery group held, unacknowledged, by the hub process `pid`."""
    consumers = await chaos.redis.xinfo_consumers(chaos.keys.events, GROUP)
    return sum(int(c["pending"]) for c in consumers if f":{pid}:" in str(c["name"]))


async def group_pending(chaos: Chaos) -> int:
    summary = await chaos.redis.xpending(chaos.keys.events, GROUP)
    return int(summary["pending"])


async def test_webhook_hub_kill(chaos: Chaos) -> None:
    """Does: two hubs deliver webhooks (4 attempts in flight each) to a receiver in the test
    that answers each request after 100 ms and verifies every signature with the
    `standardwebhooks` package; 2 workers run 250 short jobs submitted through hub B, each
    subscribed to its outcome. Once the receiver has 100 deliveries and hub A holds some
    unacknowledged, A is killed with `kill -9`.

    Asserts: every job's `completed` event arrives at least once, with a valid signature;
    the receiver sees each webhook-id at most twice, and no more duplicates in all than
    the deliveries A held at the kill (a duplicate is one A sent but could not
    acknowledge); B takes A's held deliveries over once they were idle for
    HUB_WEBHOOK_CLAIM_IDLE_SECONDS (3 s), nothing stays pending in the group and nothing
    is dead-lettered; every job completes exactly once."""

    async def slow(delivery: Delivery, attempt: int) -> Response:
        await asyncio.sleep(RECEIVER_MS / 1000)  # a receiver's own latency, not a wait on state
        return Response(status_code=204)

    async with receiving(Receiver(respond=slow)) as rx:
        hub_a = await chaos.start_hub("hub-a", **WEBHOOK_ENV)
        hub_b = await chaos.start_hub("hub-b", **WEBHOOK_ENV)
        for worker_id in ("wh-1", "wh-2"):
            chaos.start_worker(worker_id, CONCURRENT_JOBS="8")
        await chaos.registered("wh-1", "wh-2")
        hook: dict[str, Any] = {"url": rx.url}
        jobs = [sim_job(f"wh-{i:03d}", steps=1, step_ms=1, webhook=hook) for i in range(JOBS)]
        async with httpx.AsyncClient(base_url=hub_b.url, headers=CLIENT, timeout=30) as http:
            ids = await submit_batch(http, jobs)

        async def a_is_mid_delivery() -> bool:
            return len(rx.deliveries) >= 100 and await held_by(chaos, hub_a.pid) > 0

        await wait_until(a_is_mid_delivery, timeout=60, interval=0.005, message="A delivering")
        killed = hub_a.kill()
        held_at_kill = await held_by(chaos, hub_a.pid)
        received_at_kill = len(rx.deliveries)

        def all_delivered() -> bool:
            return {d.payload["data"]["job_id"] for d in rx.verified} >= set(ids)

        await wait_until(all_delivered, timeout=90, interval=0.05, message="every outcome")
        all_in = time.time() - killed

        async def nothing_pending() -> bool:
            return await group_pending(chaos) == 0

        await wait_until(nothing_pending, timeout=30, message="nothing left pending")
        await wait_all_finished(chaos, ids, timeout=30)
        held_after = await held_by(chaos, hub_a.pid)
        dead_letters = int(await chaos.redis.zcard(chaos.keys.webhooks_failed))

    per_id = rx.ids()
    duplicates = len(rx.deliveries) - len(per_id)
    acc = await chaos.account(ids)
    chaos.report(
        acc,
        deliveries=len(ids),
        received=len(rx.deliveries),
        unique_ids=len(per_id),
        duplicates=duplicates,
        held_by_killed_hub=held_at_kill,
        received_before_kill=received_at_kill,
        max_per_id=max(per_id.values()),
        kill_to_all_delivered_s=all_in,
        claim_idle_s=CLAIM_IDLE_S,
        dead_letters=dead_letters,
    )
    acc.check()
    assert acc.completed == JOBS
    assert [d.refused for d in rx.deliveries if d.refused is not None] == []
    assert all(d.payload["type"] == "job.completed" for d in rx.deliveries)
    assert len(per_id) == JOBS  # one webhook-id per job's outcome
    assert held_at_kill > 0, "A held nothing when it was killed: the scenario did not happen"
    assert duplicates <= held_at_kill
    assert max(per_id.values()) <= 2
    assert held_after == 0, "A's held deliveries were not taken over"
    assert dead_letters == 0
    assert hub_b.alive
