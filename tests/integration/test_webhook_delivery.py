"""Signed webhooks, end to end: a hub in-process delivers to a real receiver on loopback, which
verifies every request with the reference `standardwebhooks` package, as a customer would.

- a job's outcome is delivered once, signed so that `standardwebhooks` verifies it (and a
  receiver holding another secret does not), with the Standard Webhooks payload shape;
- only the subscribed event types are sent; HUB_WEBHOOK_URL gets every job's outcome;
- a failing receiver is retried with the same webhook-id until it accepts; one that keeps
  failing is dead-lettered, listed for operators and can be redelivered;
- redirects are not followed, an answer that never comes is timed out, an endless answer
  is read only up to the cap;
- two hubs share the deliveries without sending one twice; the deliveries a dead hub held,
  first attempts and retries alike, are taken over by a live one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from starlette.responses import Response, StreamingResponse

from hub.webhooks.sender import Sender
from hub.webhooks.targets import AddressPolicy
from shared.broker import Broker
from shared.logs import JsonFormatter, TextFormatter
from shared.text import as_text
from shared.webhook_queue import GROUP, FailedAttempt, RetryPolicy
from tests.helpers import wait_until
from tests.hub_support import (
    CLIENT,
    OPERATOR,
    capabilities,
    claim,
    hub_client,
    hub_settings,
    start_worker,
)
from tests.webhook_support import (
    LOOPBACK,
    OTHER_SECRET,
    SECRET,
    Delivery,
    Receiver,
    receiving,
    webhook_settings,
)


@contextlib.asynccontextmanager
async def hub(redis_url: str, **webhooks: Any) -> AsyncIterator[httpx.AsyncClient]:
    deliver = webhooks.pop("deliver", True)
    settings = hub_settings(redis_url, webhooks=webhook_settings(**webhooks))
    async with hub_client(settings, deliver_webhooks=deliver) as http:
        yield http


async def submit(http: httpx.AsyncClient, webhook: dict[str, Any] | None, **job: Any) -> str:
    body = {"service_type": "hooked", **job}
    if webhook is not None:
        body["webhook"] = webhook
    response = await http.post("/jobs", json=body, headers=CLIENT)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert isinstance(job_id, str)
    return job_id


async def complete(broker: Broker, job_id: str) -> None:
    caps = await start_worker(broker, "hook-worker", capabilities(services=["hooked"]))
    claimed = await claim(broker, "hook-worker", caps)
    assert claimed.job.id == job_id
    assert await broker.complete("hook-worker", job_id, claimed.token, {"ok": 1}) == "ok"


async def drained(redis: Redis) -> bool:
    """Every stream entry so far was handed to a hub and acknowledged: nothing is in flight
    and nothing more will be sent unless a retry is due."""
    groups = await redis.xinfo_groups("events")
    last = (await redis.xinfo_stream("events"))["last-generated-id"]
    return any(
        as_text(g["name"]) == GROUP and g["pending"] == 0 and g["last-delivered-id"] == last
        for g in groups
    )


async def webhook_events(redis: Redis, etype: str) -> list[dict[str, Any]]:
    found = []
    entries: list[Any] = await redis.xrange("events") or []
    for _, fields in entries:
        if fields[b"kind"] == b"webhook" and fields[b"type"] == etype.encode():
            found.append(orjson.loads(fields[b"data"]))
    return found


async def test_a_jobs_outcome_is_delivered_once_signed_for_standardwebhooks(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    async with receiving() as rx, hub(redis_url) as http:
        job_id = await submit(http, {"url": rx.url})
        shown = (await http.get(f"/jobs/{job_id}", headers=CLIENT)).json()["webhook"]
        assert shown == {"url": rx.url, "events": ["completed", "failed", "cancelled"]}
        await complete(broker, job_id)
        await wait_until(lambda: rx.deliveries, message="a delivery")
        await wait_until(lambda: drained(redis), message="every event dealt with")
    (delivery,) = rx.deliveries  # accepted, claimed: not subscribed by default
    assert delivery.refused is None, delivery.refused
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.id.endswith(".job")
    assert delivery.payload["type"] == "job.completed"
    assert delivery.payload["timestamp"].endswith("Z")
    data = delivery.payload["data"]
    assert data["job_id"] == job_id
    assert data["event"] == "completed"
    assert data["worker_id"] == "hook-worker"
    assert data["seq"] == 3  # accepted, claimed, completed


async def test_a_receiver_with_another_secret_cannot_verify(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    async with receiving(Receiver(secret=OTHER_SECRET)) as rx, hub(redis_url) as http:
        await submit(http, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: rx.deliveries, message="a delivery")
    assert rx.verified == []
    assert rx.deliveries[0].refused == "No matching signature found"


async def test_only_the_subscribed_event_types_are_sent(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    async with receiving() as rx, hub(redis_url) as http:
        job_id = await submit(http, {"url": rx.url, "events": ["accepted", "completed"]})
        await complete(broker, job_id)
        await wait_until(lambda: len(rx.deliveries) >= 2, message="two deliveries")
        await wait_until(lambda: drained(redis), message="every event dealt with")
    got = sorted((d.payload["data"]["seq"], d.payload["type"]) for d in rx.verified)
    assert got == [(1, "job.accepted"), (3, "job.completed")]
    assert len(rx.deliveries) == 2


async def test_the_hub_url_gets_every_jobs_outcome_once(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    async with receiving() as rx, hub(redis_url, url=rx.url) as http:
        plain = await submit(http, None)
        both = await submit(http, {"url": rx.url, "events": ["accepted", "cancelled"]})
        await http.post(f"/jobs/{plain}/cancel", headers=CLIENT)
        await http.post(f"/jobs/{both}/cancel", headers=CLIENT)
        await wait_until(lambda: drained(redis), message="every event dealt with")
        await wait_until(lambda: len(rx.deliveries) >= 3, message="three deliveries")
    seen = sorted((d.payload["data"]["job_id"], d.payload["type"], d.id[-4:]) for d in rx.verified)
    # The job's own URL and the hub's are the same here: its cancellation is sent once.
    assert seen == sorted(
        [
            (plain, "job.cancelled", ".hub"),
            (both, "job.accepted", ".job"),
            (both, "job.cancelled", ".job"),
        ]
    )


async def test_a_failing_receiver_is_retried_with_the_same_id_until_it_accepts(
    redis_url: str, redis: Redis
) -> None:
    async def fail_twice(delivery: Delivery, attempt: int) -> Response:
        return Response("busy", status_code=500 if attempt < 2 else 200)

    async with receiving(Receiver(respond=fail_twice)) as rx, hub(redis_url) as http:
        await submit(http, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: len(rx.deliveries) == 3, message="three attempts")
        await wait_until(lambda: webhook_events(redis, "webhook_delivered"), message="settled")
        retrying = (await http.get("/webhooks/deliveries?status=retrying", headers=OPERATOR)).json()
    assert len(set(rx.ids())) == 1
    assert all(d.refused is None for d in rx.deliveries)  # each attempt signed afresh, valid
    assert [e["attempts"] for e in await webhook_events(redis, "webhook_retrying")] == [1, 2]
    assert (await webhook_events(redis, "webhook_retrying"))[0]["error"] == "HTTP 500: busy"
    assert [e["attempts"] for e in await webhook_events(redis, "webhook_delivered")] == [3]
    assert retrying == {"deliveries": [], "next_cursor": None}
    assert await redis.keys("webhook:*") == []


async def test_a_delivery_that_keeps_failing_is_dead_lettered_and_can_be_redelivered(
    redis_url: str, redis: Redis
) -> None:
    healthy = False

    async def down(delivery: Delivery, attempt: int) -> Response:
        return Response(status_code=204 if healthy else 503)

    async with receiving(Receiver(respond=down)) as rx, hub(redis_url, retry_for=0.3) as http:
        job_id = await submit(http, {"url": rx.url, "events": ["accepted"]})

        async def dead_letter() -> list[dict[str, Any]]:
            page = await http.get("/webhooks/deliveries?status=failed", headers=OPERATOR)
            found: list[dict[str, Any]] = page.json()["deliveries"]
            return found

        letters: list[dict[str, Any]] = await wait_until(dead_letter, timeout=10)
        (failed,) = letters
        assert failed["id"] == rx.deliveries[0].id
        assert failed["job_id"] == job_id
        assert failed["url"] == rx.url
        assert failed["event"] == "accepted"
        assert failed["status"] == "failed"
        assert failed["last_status"] == 503
        assert failed["last_error"] == "HTTP 503"
        assert failed["attempts"] == len(rx.deliveries) >= 1
        refused = await http.get("/webhooks/deliveries?status=failed", headers=CLIENT)
        assert refused.status_code == 403
        path = f"/webhooks/deliveries/{failed['id']}/redeliver"
        assert (await http.post(path, headers=CLIENT)).status_code == 403

        healthy = True
        again = await http.post(path, headers=OPERATOR)
        assert again.status_code == 200, again.text
        await wait_until(lambda: rx.ids()[failed["id"]] == failed["attempts"] + 1)
        await wait_until(lambda: webhook_events(redis, "webhook_delivered"), message="settled")
        assert await dead_letter() == []
        assert (await http.post(path, headers=OPERATOR)).status_code == 404
    assert rx.deliveries[-1].refused is None


async def test_redirects_are_not_followed(redis_url: str, redis: Redis) -> None:
    async def redirect(delivery: Delivery, attempt: int) -> Response:
        return Response(status_code=307, headers={"Location": "/elsewhere"})

    async with receiving(Receiver(respond=redirect)) as rx, hub(redis_url, retry_for=0) as http:
        await submit(http, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: webhook_events(redis, "webhook_failed"), message="dead letter")
    assert [d.path for d in rx.deliveries] == ["/hook"]
    (failed,) = await webhook_events(redis, "webhook_failed")
    assert failed["error"] == "HTTP 307 (redirects are not followed)"


async def test_an_answer_that_never_comes_is_timed_out_and_retried(
    redis_url: str, redis: Redis
) -> None:
    async def hang_once(delivery: Delivery, attempt: int) -> Response:
        if attempt == 0:
            await rx.release.wait()  # never answers while the test runs
        return Response(status_code=204)

    rx = Receiver(respond=hang_once)
    async with receiving(rx), hub(redis_url, timeout=0.3, claim_idle=5) as http:
        await submit(http, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: webhook_events(redis, "webhook_delivered"), message="settled")
    (retry,) = await webhook_events(redis, "webhook_retrying")
    assert retry["error"] == "no answer within 0.3 s"
    assert len(rx.deliveries) == 2


async def test_an_endless_answer_is_read_only_up_to_the_cap() -> None:
    async def endless(delivery: Delivery, attempt: int) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4096):  # 64 MiB: "endless" to a reader capped far below
                yield b"x" * 16384

        return StreamingResponse(chunks(), status_code=200)

    cap = 100_000
    sender = Sender(AddressPolicy(LOOPBACK), timeout=60, max_response_bytes=cap, max_connections=1)
    async with receiving(Receiver(respond=endless)) as rx:
        outcome = await sender.post(rx.url, b"{}", {"webhook-id": "w1"})
    await sender.aclose()
    assert outcome.ok, outcome.error
    assert cap <= outcome.body_bytes_read < cap + 65536 + 1  # at most one read past the cap


async def test_two_hubs_share_deliveries_without_sending_one_twice(
    redis_url: str, redis: Redis
) -> None:
    async with receiving() as rx, hub(redis_url) as one, hub(redis_url) as other:
        for i in range(60):
            await submit(one if i % 2 else other, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: len(rx.deliveries) >= 60, message="60 deliveries")
        await wait_until(lambda: drained(redis), message="every event dealt with")
        consumers = await redis.xinfo_consumers("events", GROUP)
    assert len(rx.ids()) == 60
    assert max(rx.ids().values()) == 1
    assert len(rx.verified) == 60
    assert len(consumers) == 2


async def test_a_dead_hubs_held_deliveries_are_taken_over(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    """The dead hub is a consumer that read five events and never acknowledged them."""
    dead = broker.webhooks.group("dead-hub")
    await dead.ensure()
    async with receiving() as rx:
        async with hub(redis_url, deliver=False) as http:
            ids = [await submit(http, {"url": rx.url, "events": ["accepted"]}) for _ in range(5)]
        dead.open()
        held = await dead.read_new(count=100, block_ms=100)
        await dead.close()
        assert len(held) == 5
        async with hub(redis_url, timeout=0.2, claim_idle=0.5) as http:
            await wait_until(lambda: len(rx.deliveries) >= 5, message="five deliveries")
            await wait_until(lambda: drained(redis), message="every event dealt with")
            deliverer = http.hub_app.state.hub.webhooks  # type: ignore[attr-defined]
            assert deliverer.counts["taken_over"] == 5
    assert sorted(d.payload["data"]["job_id"] for d in rx.verified) == sorted(ids)
    assert await dead.consumers() == {"dead-hub": 0, deliverer.consumer: 0}


async def test_a_retry_held_by_a_dead_hub_is_retried_by_another(
    redis_url: str, redis: Redis, broker: Broker
) -> None:
    policy = RetryPolicy(base_ms=1, cap_ms=1, horizon_ms=60_000)
    async with receiving() as rx:
        failed = FailedAttempt(
            "1-0.job", rx.url, b'{"x": 1}', "accepted", "j1", None, "HTTP 500", 500, True
        )
        assert await broker.webhooks.defer([failed], policy) == ["retrying"]

        async def taken() -> bool:
            due, _ = await broker.webhooks.take_due(10, 300)
            return bool(due)

        await wait_until(taken, message="taken")
        # The hub that took it dies here; another takes over once the lease (300 ms) ends.
        async with hub(redis_url):
            await wait_until(lambda: rx.deliveries, message="the retry")
            await wait_until(lambda: webhook_events(redis, "webhook_delivered"), message="settled")
    assert [d.id for d in rx.verified] == ["1-0.job"]
    assert rx.verified[0].body == b'{"x": 1}'


async def test_events_delivered_meanwhile_do_not_wait_for_a_slow_receiver(
    redis_url: str, redis: Redis
) -> None:
    """One receiver hangs; deliveries to another go on (no head-of-line blocking)."""

    async def hang(delivery: Delivery, attempt: int) -> Response:
        await slow.release.wait()
        return Response(status_code=204)

    slow = Receiver(respond=hang)
    async with (
        receiving(slow),
        receiving() as fast,
        hub(redis_url, timeout=30, claim_idle=60) as http,
    ):
        await submit(http, {"url": slow.url, "events": ["accepted"]})
        await wait_until(lambda: slow.deliveries, message="the slow one is being sent")
        for _ in range(3):
            await submit(http, {"url": fast.url, "events": ["accepted"]})
        await wait_until(lambda: len(fast.deliveries) == 3, message="the others meanwhile")
        assert len(slow.deliveries) == 1
        slow.release.set()


async def test_the_signing_secret_never_reaches_the_logs(
    redis_url: str, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Every logger at DEBUG through retries, a dead letter and a redelivery."""
    for name in ("", "hub", "shared", "uvicorn", "httpcore", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)

    async def flaky(delivery: Delivery, attempt: int) -> Response:
        return Response(status_code=500 if attempt < 2 else 204)

    async with receiving(Receiver(respond=flaky)) as rx, hub(redis_url, retry_for=0.05) as http:
        await submit(http, {"url": rx.url, "events": ["accepted"]})
        await wait_until(lambda: webhook_events(redis, "webhook_failed"), message="dead letter")
        (failed,) = (await http.get("/webhooks/deliveries", headers=OPERATOR)).json()["deliveries"]
        await http.post(f"/webhooks/deliveries/{failed['id']}/redeliver", headers=OPERATOR)
        await wait_until(lambda: webhook_events(redis, "webhook_delivered"), message="delivered")
    assert any(r.name == "hub.webhooks" for r in caplog.records), "expected webhook log lines"
    key = SECRET.removeprefix("whsec_")
    for record in caplog.records:
        for formatter in (JsonFormatter(), TextFormatter()):
            assert key not in formatter.format(record), record.name
