"""What the scripts record per minute for the dashboard's charts, in a real Redis: the claim's
wait histogram (the Lua bucket agrees with shared.minute_stats), the queue depth sample
(once per minute across hubs, bounded whatever service names clients invent), and a job's
past events read back from the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from hub.maintenance import Maintenance
from hub.series import SAMPLED_SERVICES
from shared.broker import Broker
from shared.keys import Keys
from shared.lua_source import assemble
from shared.minute_stats import OTHER_SERVICES, parse_minute, wait_bucket
from tests.factories import job as job_request
from tests.helpers import stream_fields, wait_until
from tests.hub_support import capabilities, claim, hub_settings, start_worker

PROBE = """
--- @include "events"
local out = {}
for i = 4, #ARGV do out[#out + 1] = wait_bucket(tonumber(ARGV[i])) end
return out
"""


@pytest.fixture
def lua_bucket(redis_url: str) -> Iterator[Any]:
    client = SyncRedis.from_url(redis_url)
    script = client.register_script(assemble("probe", PROBE))
    yield lambda *ms: script(keys=[Keys().pending], args=["", 1000, 1000, *ms])
    client.close()


def test_lua_and_python_put_a_wait_in_the_same_bucket(lua_bucket: Any) -> None:
    waits = [*range(0, 2050), *(2**k + d for k in range(11, 45) for d in (-1, 0, 1))]
    waits += [59_999, 60_000, 86_400_000, 7 * 86_400_000 + 12_345]
    assert lua_bucket(*waits) == [wait_bucket(ms) for ms in waits]


async def test_a_claim_counts_its_wait_in_its_minute(broker: Broker, redis: Redis) -> None:
    caps = await start_worker(broker, "w1", capabilities(services=("sim",)))
    await broker.submit(job_request("sim"))
    await claim(broker, "w1", caps)
    [event] = [e for e in await stream_fields(redis, broker.keys.events)
               if e[b"type"] == b"claimed"]  # fmt: skip
    wait_ms = int(orjson.loads(event[b"data"])["wait_ms"])
    newest = await broker.reads.event_stream().newest_id()  # the claimed event's
    minute = int(newest.split("-")[0]) // 60_000  # the claim's minute
    [raw] = await broker.reads.jobs.minute_counters([minute])
    stats = parse_minute(raw)
    assert stats.waits == {wait_bucket(wait_ms): 1}
    assert stats.counters["claimed"] == 1
    assert 0 < await redis.ttl(broker.keys.stats(minute)) <= 86400


async def test_one_depth_sample_per_minute_whoever_offers_it(broker: Broker, redis: Redis) -> None:
    async def two_offers_in_one_minute() -> bool:
        minute = await broker.reads.now_ms() // 60_000
        await redis.delete(broker.keys.stats(minute))
        first = await broker.sample_depth({"comfyui": 3})
        second = await broker.sample_depth({"comfyui": 9, "a1111": 1})
        if await broker.reads.now_ms() // 60_000 != minute:
            return False  # the minute turned between the calls: try again in the new one
        assert (first, second) == (True, False)
        [raw] = await broker.reads.jobs.minute_counters([minute])
        assert parse_minute(raw).depth == {"comfyui": 3}
        assert 0 < await redis.ttl(broker.keys.stats(minute)) <= 86400
        return True

    await wait_until(two_offers_in_one_minute, message="both offers fell in one minute")


async def test_maintenance_samples_each_services_claimable_jobs(broker: Broker) -> None:
    for service in ("sim", "sim", "sim", "comfyui"):
        await broker.submit(job_request(service))
    hubs = [Maintenance(broker, hub_settings("redis://unused", broker.settings)) for _ in "ab"]
    reports = await asyncio.gather(*(h.tick() for h in hubs))
    assert sum(r["depth_sampled"] for r in reports) in (1, 2)  # 2 only across a minute turn
    now = await broker.reads.now_ms() // 60_000
    samples = [parse_minute(raw).depth for raw in
               await broker.reads.jobs.minute_counters([now - 1, now])]  # fmt: skip
    assert {"sim": 3, "comfyui": 1} in samples


async def test_invented_service_names_cannot_grow_the_minute_hash(broker: Broker) -> None:
    """Attack: submit jobs under hundreds of invented service names, each of which would
    become a field of every minute's depth sample. Refused: only the deepest
    SAMPLED_SERVICES are named; the rest are summed under "(other)"."""
    jobs = [job_request(f"made-up-{n}") for n in range(200)]
    jobs += [job_request("comfyui") for _ in range(5)]
    await broker.submit_many(jobs)
    hub = Maintenance(broker, hub_settings("redis://unused", broker.settings))
    await hub.sample_depth()
    now = await broker.reads.now_ms() // 60_000
    [depth] = [d for raw in await broker.reads.jobs.minute_counters([now - 1, now])
               if (d := parse_minute(raw).depth) is not None]  # fmt: skip
    assert len(depth) == SAMPLED_SERVICES + 1
    assert depth["comfyui"] == 5
    assert depth[OTHER_SERVICES] == 200 - (SAMPLED_SERVICES - 1)
    assert sum(depth.values()) == 205


# -- a job's past events ------------------------------------------------------------------


async def test_a_jobs_events_are_read_back_from_both_ends_of_its_span(broker: Broker) -> None:
    caps = await start_worker(broker, "w1", capabilities(services=("sim",)))
    job_id = (await broker.submit(job_request("sim"))).job_id
    got = await claim(broker, "w1", caps)
    filler = [job_request("other") for _ in range(1200)]
    await broker.submit_many(filler)
    await broker.progress("w1", job_id, got.token, 50, "half")
    await broker.submit_many(filler)
    await broker.complete("w1", job_id, got.token, {"ok": True})
    job = await broker.get(job_id)
    assert job is not None
    assert job.event_seq == 4

    def read(budget: int) -> Any:
        return broker.reads.history.of_job(
            job_id, since_ms=job.created_at - 1000, until_ms=None, last_seq=4, budget=budget
        )

    everything = await read(5000)
    assert [f["type"] for _, f in everything] == ["accepted", "claimed", "progress", "completed"]
    assert [int(f["seq"]) for _, f in everything] == [1, 2, 3, 4]
    # A budget too small for the middle: the first and last events are still found.
    ends = await read(500)
    assert [f["type"] for _, f in ends] == ["accepted", "claimed", "completed"]
