"""The read model (shared/reads.py and the modules behind it) against a real Redis.

The hub's routes exercise these reads too, but through answers shaped for HTTP; here each
read is checked for what it promises itself: reading order, what "missing" looks like, the
bounds, the key prefix, and the event stream's handling of a link that died silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import event_stream
from shared.broker import Broker
from shared.job import JobRequest, JobStatus
from shared.redis_client import connect
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.hub_support import capabilities, claim, start_worker
from tests.tcp_proxy import PausableProxy

SCORE_UNIT = 2**43  # queue score = (1000 - effective priority) * 2^43 + seq


def priority_scores(lo: int, hi: int) -> tuple[int, int]:
    """The inclusive queue-score range of effective priorities lo..hi."""
    return (1000 - hi) * SCORE_UNIT, (1000 - lo + 1) * SCORE_UNIT - 1


async def submit(broker: Broker, service: str = "comfyui", **fields: object) -> str:
    request = JobRequest(service_type=service, **fields)  # type: ignore[arg-type]
    return (await broker.submit(request)).job_id


# -- jobs ---------------------------------------------------------------------------------


async def test_ids_read_each_index_in_its_reading_order(broker: Broker, redis: Redis) -> None:
    low = await submit(broker, priority=10)
    high = await submit(broker, priority=90)
    middle = await submit(broker, priority=50)
    jobs = broker.reads.jobs
    assert await jobs.ids("pending", 0, 10) == [high, middle, low]  # queue order
    assert await jobs.ids("pending", 1, 1) == [middle]
    assert await jobs.ids("pending", 3, 10) == []
    # Finished registries are scored by finish time and read newest first.
    await redis.zadd(broker.keys.finished("failed"), {"old": 1, "newest": 3, "middle": 2})
    assert await jobs.ids("failed", 0, 10) == ["newest", "middle", "old"]
    heads = await jobs.heads({"pending": 2, "failed": 1, "cancelled": 5})
    assert heads == {"pending": [high, middle], "failed": ["newest"], "cancelled": []}


async def test_summaries_leave_out_payload_and_result(broker: Broker) -> None:
    job_id = await submit(broker, payload={"prompt": "x" * 1000}, tags=["a"])
    summary, gone = await broker.reads.jobs.summaries([job_id, "job-gone"])
    assert gone is None
    assert summary is not None
    assert (summary.id, summary.status, summary.tags) == (job_id, JobStatus.PENDING, ["a"])
    assert summary.payload is None
    assert await broker.reads.jobs.summaries([]) == []


async def test_fields_are_text_and_none_where_missing(broker: Broker) -> None:
    job_id = await submit(broker, priority=70)
    rows = await broker.reads.jobs.fields([job_id, "job-gone"], ("status", "priority", "nope"))
    assert rows == [["pending", "70", None], [None, None, None]]
    assert await broker.reads.jobs.fields([], ("status",)) == []


async def test_summary_and_position(broker: Broker) -> None:
    first = await submit(broker)
    second = await submit(broker)
    jobs = broker.reads.jobs
    job, position = await jobs.summary_and_position(second)
    assert job is not None
    assert (job.id, position) == (second, 1)
    await claim(broker, "w1", await start_worker(broker, "w1"))
    job, position = await jobs.summary_and_position(first)
    assert job is not None
    assert (job.status, position) == (JobStatus.ACTIVE, None)  # claimed: no longer queued
    assert await jobs.summary_and_position("job-gone") == (None, None)


async def test_result_is_decoded(broker: Broker) -> None:
    await submit(broker)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    assert await broker.reads.jobs.result(got.job.id) is None  # running: no result yet
    await broker.complete("w1", got.job.id, got.token, {"images": ["a.png"]})
    assert await broker.reads.jobs.result(got.job.id) == {"images": ["a.png"]}
    assert await broker.reads.jobs.result("job-gone") is None


async def test_counts_by_status(broker: Broker) -> None:
    for _ in range(3):
        await submit(broker)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    await broker.complete("w1", got.job.id, got.token, {})
    await claim(broker, "w1", caps)
    pending = await broker.reads.jobs.ids("pending", 0, 1)
    await broker.cancel(pending[0])
    assert await broker.reads.jobs.counts() == {
        "pending": 0,
        "active": 1,
        "completed": 1,
        "failed": 0,
        "cancelled": 1,
    }


async def test_pending_counts_by_score_range_and_class(broker: Broker) -> None:
    await submit(broker, "comfyui", priority=90)
    await submit(broker, "comfyui", priority=20)
    await submit(broker, "a1111", priority=30)
    ranges = [priority_scores(75, 1000), priority_scores(0, 74)]
    counts = await broker.reads.jobs.pending_counts(ranges, max_classes=10)
    assert (counts.total, counts.backing_off, counts.in_ranges) == (3, 0, [1, 2])
    assert counts.classes == 2
    by_service = {c.service: c.in_ranges for c in counts.by_class}
    assert by_service == {"comfyui": [1, 1], "a1111": [0, 1]}
    bounded = await broker.reads.jobs.pending_counts(ranges, max_classes=1)
    assert (len(bounded.by_class), bounded.classes) == (1, 2)  # the bound, and what exists


async def test_pending_counts_see_backing_off_retries(redis: Redis) -> None:
    broker = Broker(redis, BrokerSettings(retry_backoff_base=60.0, retry_backoff_cap=60.0))
    await submit(broker)
    caps = await start_worker(broker, "w1")
    got = await claim(broker, "w1", caps)
    assert await broker.fail("w1", got.job.id, got.token, "flaky") == "retrying"
    counts = await broker.reads.jobs.pending_counts([priority_scores(0, 1000)], max_classes=10)
    assert (counts.total, counts.backing_off) == (1, 1)


async def test_minute_counters_in_the_order_asked(broker: Broker) -> None:
    before = await broker.reads.now_ms() // 60_000
    await submit(broker)
    await submit(broker)
    after = await broker.reads.now_ms() // 60_000
    minutes = [before - 1000, *range(before, after + 1)]
    buckets = await broker.reads.jobs.minute_counters(minutes)
    assert buckets[0] == {}  # long expired (or never written)
    assert sum(b.get("submitted", 0) for b in buckets[1:]) == 2
    assert all(isinstance(v, int) for b in buckets for v in b.values())


# -- fleet and clock ----------------------------------------------------------------------


async def test_fleet_live_and_one_worker(broker: Broker) -> None:
    fleet = broker.reads.fleet
    assert await fleet.live() == []
    caps = await start_worker(broker, "w1", capabilities(gpu_gb=[80]), slots=2)
    await start_worker(broker, "w2")
    await submit(broker, customer_id="acme")
    got = await claim(broker, "w1", caps)
    assert sorted(w.id for w in await fleet.live()) == ["w1", "w2"]
    assert len(await fleet.live(limit=1)) == 1
    w1 = await fleet.worker("w1")
    assert w1 is not None
    assert (w1.alive, w1.slots, w1.capabilities.hardware.gpus[0].memory_gb) == (True, 2, 80)
    assert [(lease.job_id, lease.customer_id) for lease in w1.leases] == [(got.job.id, "acme")]
    await broker.deregister_worker("w2")
    assert [w.id for w in await fleet.live()] == ["w1"]
    w2 = await fleet.worker("w2")  # offline, kept for the retention TTL
    assert w2 is not None
    assert (w2.alive, w2.status) == (False, "offline")
    assert await fleet.worker("nobody") is None


async def test_now_ms_is_the_redis_clock(broker: Broker, redis: Redis) -> None:
    def ms(reply: tuple[int, int]) -> int:
        return int(reply[0]) * 1000 + int(reply[1]) // 1000

    before = ms(await redis.time())
    now = await broker.reads.now_ms()
    assert before <= now <= ms(await redis.time())


async def test_reads_use_the_key_prefix(redis: Redis) -> None:
    """A pool's reads find its keys, and only its keys: what per-pool routing relies on."""
    tagged = Broker(redis, BrokerSettings(prefix="{pool-a}:"))
    other = Broker(redis, BrokerSettings(prefix="{pool-b}:"))
    job_id = await submit(tagged)
    await start_worker(tagged, "w1")
    assert await tagged.reads.jobs.ids("pending", 0, 10) == [job_id]
    assert (await tagged.reads.jobs.counts())["pending"] == 1
    assert [w.id for w in await tagged.reads.fleet.live()] == ["w1"]
    assert await other.reads.jobs.ids("pending", 0, 10) == []
    assert await other.reads.fleet.live() == []
    assert all(as_text(k).startswith("{pool-a}:") for k in await redis.keys("*"))


# -- the event stream ---------------------------------------------------------------------


@pytest.fixture
async def proxy(redis_server_url: str) -> AsyncIterator[PausableProxy]:
    port = urlsplit(redis_server_url).port
    assert port is not None
    running = await PausableProxy(port).start()
    try:
        yield running
    finally:
        await running.close()


async def test_event_stream_reads_after_an_id(broker: Broker) -> None:
    stream = broker.reads.event_stream()
    assert await stream.newest_id() == "0-0"
    job_id = await submit(broker)
    stream.open()
    try:
        entries = await stream.read("0-0", count=10, block_ms=10)
        assert [(f["kind"], f["type"], f["job"], f["seq"]) for _, f in entries] == [
            ("job", "accepted", job_id, "1")
        ]
        newest = await stream.newest_id()
        assert entries[-1][0] == newest
        assert await stream.read(newest, count=10, block_ms=10) == []  # nothing new
    finally:
        await stream.close()
    await stream.close()  # closing twice is harmless


async def test_event_stream_drops_a_silent_link_and_reads_on(
    proxy: PausableProxy, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream, "READ_MARGIN", 0.2)
    client = connect(RedisSettings(url=proxy.url))
    stream = Broker(client, broker.settings).reads.event_stream()
    stream.open()
    try:
        after = await stream.newest_id()
        assert await stream.read(after, count=10, block_ms=10) == []  # the reader is connected
        proxy.blackhole()
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(stream.read(after, count=10, block_ms=50), 5)
        job_id = await submit(broker)
        entries = await stream.read(after, count=10, block_ms=1000)  # on a fresh connection
        assert [f["job"] for _, f in entries] == [job_id]
    finally:
        await stream.close()
        await client.aclose()
