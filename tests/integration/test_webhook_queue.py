"""The retry schedule and dead letter of webhook deliveries, as the Lua scripts keep them
(webhook_defer, webhook_take, webhook_settle, webhook_redeliver), on a real Redis.

- a failed first attempt is recorded once per delivery id and due after base * [0.5, 1);
  each further failure doubles the wait up to the cap; the delivery is dead-lettered once
  its next attempt would fall past the retry horizon, or at once when it was refused;
- a due delivery is taken by one hub at a time under a lease; once the lease runs out
  another may take it, and the first hub's late outcome is refused;
- a dead letter expires with the retention period; an operator's redelivery makes it due
  at once with attempts from 0 and a fresh horizon;
- every change writes a `webhook` event, which no webhook is ever sent for.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from shared.broker import Broker
from shared.redis_clock import redis_now_ms
from shared.text import as_text
from shared.webhook_queue import DueDelivery, FailedAttempt, RetryPolicy, WebhookQueue

POLICY = RetryPolicy(base_ms=10_000, cap_ms=25_000, horizon_ms=3_600_000)
IMMEDIATE = RetryPolicy(base_ms=1, cap_ms=1, horizon_ms=3_600_000)


def failed(delivery_id: str = "5-0.job", *, retryable: bool = True) -> FailedAttempt:
    return FailedAttempt(
        delivery_id, "https://h.example/x", b'{"a": 1}', "completed", "job-1", "acme",
        "HTTP 502", 502, retryable,
    )  # fmt: skip


async def record(redis: Redis, delivery_id: str = "5-0.job") -> dict[str, str]:
    raw = await redis.hgetall(f"webhook:{delivery_id}")
    return {as_text(k): as_text(v) for k, v in raw.items()}


async def events(redis: Redis) -> list[tuple[str, str, dict[str, Any]]]:
    entries: list[Any] = await redis.xrange("events") or []
    return [
        (as_text(f[b"type"]), as_text(f[b"delivery"]), orjson.loads(f[b"data"]))
        for _, f in entries
        if f[b"kind"] == b"webhook"
    ]


async def take_one(queue: WebhookQueue, lease_ms: int = 60_000) -> DueDelivery:
    (due,), _ = await queue.take_due(10, lease_ms)
    return due


async def test_a_failed_first_attempt_is_scheduled_after_the_base_wait(
    broker: Broker, redis: Redis
) -> None:
    before = await redis_now_ms(redis)
    assert await broker.webhooks.defer([failed()], POLICY) == ["retrying"]
    after = await redis_now_ms(redis)
    due = await redis.zscore("webhooks:due", "5-0.job")
    assert due is not None
    assert before + 5_000 <= due <= after + 10_000
    rec = await record(redis)
    assert rec["attempts"] == "1"
    assert rec["status"] == "retrying"
    assert rec["last_error"] == "HTTP 502"
    assert rec["body"] == '{"a": 1}'
    assert await redis.ttl("webhook:5-0.job") == -1  # a retry lives as long as it retries
    assert await events(redis) == [
        (
            "webhook_retrying",
            "5-0.job",
            {
                "attempts": 1,
                "error": "HTTP 502",
                "status": 502,
                "delay_ms": due - int(rec["last_attempt_at"]),
                "delivery": "5-0.job",
                "job_id": "job-1",
            },
        )
    ]


async def test_consumers_of_departed_hubs_are_forgotten_unless_they_hold_entries(
    broker: Broker, redis: Redis
) -> None:
    holder = broker.webhooks.group("holder")
    await holder.ensure()
    await redis.xadd("events", {"kind": "job", "type": "accepted"})
    holder.open()
    await holder.read_new(count=10, block_ms=10)
    await holder.close()
    await redis.xgroup_createconsumer("events", "webhooks", "idle")  # a hub that left
    assert await holder.consumers() == {"holder": 1, "idle": 0}
    assert await holder.prune_consumers(idle_ms=0) == 1
    assert await holder.consumers() == {"holder": 1}


async def test_a_delivery_is_recorded_once(broker: Broker, redis: Redis) -> None:
    assert await broker.webhooks.defer([failed()], POLICY) == ["retrying"]
    assert await broker.webhooks.defer([failed(), failed("6-0.hub")], POLICY) == [
        "exists",
        "retrying",
    ]
    assert await redis.zcard("webhooks:due") == 2


async def test_each_failure_doubles_the_wait_up_to_the_cap(broker: Broker, redis: Redis) -> None:
    queue = broker.webhooks
    await queue.defer([failed()], IMMEDIATE)
    waits = []
    for _ in range(4):
        delivery = await take_one(queue)
        now = await redis_now_ms(redis)
        outcome = await queue.settle(
            delivery, error="HTTP 500", status=500, retryable=True, policy=POLICY
        )
        assert outcome == "retrying"
        waits.append((int(await redis.zscore("webhooks:due", "5-0.job") or 0) - now) / 1000)
        await redis.zadd("webhooks:due", {"5-0.job": 0})  # due now, to go on
    # attempts 2..5: base 10 s * 2, 4, 8, 16, capped at 25, times [0.5, 1)
    for wait, full in zip(waits, (20, 25, 25, 25), strict=True):
        assert full * 0.5 - 0.1 <= wait <= full + 0.1, waits
    assert (await record(redis))["attempts"] == "5"


async def test_past_the_horizon_the_delivery_is_dead_lettered(broker: Broker, redis: Redis) -> None:
    short = RetryPolicy(base_ms=10_000, cap_ms=10_000, horizon_ms=1_000)
    assert await broker.webhooks.defer([failed()], short) == ["failed"]
    rec = await record(redis)
    assert rec["status"] == "failed"
    assert "next_attempt_at" not in rec
    assert await redis.zcard("webhooks:due") == 0
    assert await redis.zscore("webhooks:failed", "5-0.job") is not None
    assert 0 < await redis.pttl("webhook:5-0.job") <= broker.settings.retention_ms
    assert [e[0] for e in await events(redis)] == ["webhook_failed"]


async def test_a_refused_target_is_dead_lettered_at_once(broker: Broker, redis: Redis) -> None:
    assert await broker.webhooks.defer([failed(retryable=False)], POLICY) == ["failed"]
    (delivery,), more = await broker.webhooks.listing("failed", offset=0, limit=10)
    assert not more
    assert delivery.id == "5-0.job"
    assert delivery.job_id == "job-1"
    assert delivery.customer_id == "acme"
    assert delivery.attempts == 1
    assert delivery.last_status == 502
    assert delivery.to_public()["finished_at"].endswith("Z")


async def test_one_hub_at_a_time_holds_a_due_delivery(broker: Broker, redis: Redis) -> None:
    queue = broker.webhooks
    await queue.defer([failed()], IMMEDIATE)
    first = await take_one(queue, lease_ms=60_000)
    assert first.body == b'{"a": 1}'
    assert first.attempts == 1
    nothing, wait = await queue.take_due(10, 60_000)
    assert nothing == []
    assert wait is not None
    assert 59_000 <= wait <= 60_000  # due again when the lease runs out


async def test_a_late_outcome_after_the_lease_ran_out_is_refused(
    broker: Broker, redis: Redis
) -> None:
    queue = broker.webhooks
    await queue.defer([failed()], IMMEDIATE)
    slow = await take_one(queue, lease_ms=1)
    await redis.zadd("webhooks:due", {"5-0.job": 0})  # the lease has run out
    fast = await take_one(queue)
    assert fast.token != slow.token
    assert await queue.settle(fast, error=None, status=200, retryable=True, policy=POLICY) == (
        "delivered"
    )
    assert await queue.settle(slow, error="x", status=None, retryable=True, policy=POLICY) == (
        "stale"
    )
    assert await redis.exists("webhook:5-0.job") == 0
    assert await redis.zcard("webhooks:due") == 0
    assert [e[0] for e in await events(redis)] == ["webhook_retrying", "webhook_delivered"]


async def test_a_dead_letter_drops_what_is_older_than_the_retention(
    broker: Broker, redis: Redis
) -> None:
    await broker.webhooks.defer([failed("1-0.job", retryable=False)], POLICY)
    await redis.zadd("webhooks:failed", {"1-0.job": 1_000})  # failed long ago
    await broker.webhooks.defer([failed("2-0.job", retryable=False)], POLICY)
    assert [as_text(m) for m in await redis.zrange("webhooks:failed", 0, -1)] == ["2-0.job"]


async def test_an_operator_redelivers_a_dead_letter(broker: Broker, redis: Redis) -> None:
    queue = broker.webhooks
    assert await queue.redeliver("5-0.job") == "missing"
    await queue.defer([failed()], IMMEDIATE)
    assert await queue.redeliver("5-0.job") == "not_failed"
    refused = await take_one(queue)
    await queue.settle(refused, error="refused", status=None, retryable=False, policy=POLICY)
    assert (await record(redis))["status"] == "failed"
    before = await redis_now_ms(redis)
    assert await queue.redeliver("5-0.job") == "ok"
    rec = await record(redis)
    assert (rec["status"], rec["attempts"]) == ("retrying", "0")
    assert int(rec["created_at"]) >= before  # a fresh horizon
    assert await redis.ttl("webhook:5-0.job") == -1
    assert await redis.zcard("webhooks:failed") == 0
    (again,), _ = await queue.take_due(10, 60_000)
    assert again.id == "5-0.job"
    assert (await events(redis))[-1][0] == "webhook_redelivered"


async def test_a_dead_letter_lists_newest_first_in_pages(broker: Broker, redis: Redis) -> None:
    now = await redis_now_ms(redis)
    for i in range(5):
        await broker.webhooks.defer([failed(f"{i}-0.job", retryable=False)], POLICY)
        await redis.zadd("webhooks:failed", {f"{i}-0.job": now - 100 + i})  # distinct times
    page, more = await broker.webhooks.listing("failed", offset=0, limit=3)
    assert more
    rest, more = await broker.webhooks.listing("failed", offset=3, limit=3)
    assert not more
    assert [d.id for d in page + rest] == [f"{i}-0.job" for i in (4, 3, 2, 1, 0)]
