"""REDIS_WAIT_REPLICAS (shared/replication.py): a change counts as made only once replicas
hold it, and what a caller sees when they do not acknowledge in time. Real primary and
replica; "the replica cannot acknowledge" is a replica frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.job import JobStatus
from shared.redis_client import connect, connect_server
from shared.redis_connections import DemotedPrimary
from shared.redis_settings import RedisSettings
from shared.replication import NotReplicated
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.factories import caps, job
from tests.hub_support import CLIENT, hub_client, hub_settings
from tests.redis_servers import Replicated

# Long enough that an in-sync replica always acknowledges in time on a loaded 2-core box (one
# run missed 200 ms), short enough that each call made while the replica is frozen, which
# must run into this timeout, costs little.
WAIT_MS = 1000


@pytest.fixture
def waiting(broker_settings: BrokerSettings) -> BrokerSettings:
    import dataclasses

    return dataclasses.replace(broker_settings, wait_replicas=1, wait_timeout_ms=WAIT_MS)


@pytest.fixture
async def client(replicated: Replicated) -> AsyncIterator[Redis]:
    redis = connect_server(replicated.settings())
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def broker(client: Redis, waiting: BrokerSettings) -> Broker:
    return Broker(client, waiting)


@contextlib.contextmanager
def replica_frozen(replicated: Replicated) -> Iterator[None]:
    """No replica can acknowledge anything until the block ends (then it catches up)."""
    replica = replicated.replicas[0]
    replica.freeze()
    try:
        yield
    finally:
        replica.thaw()
        replicated.wait_in_sync()


async def test_with_the_replica_in_sync_every_change_returns_as_usual(broker: Broker) -> None:
    submitted = await broker.submit(job(id="w-1"))
    assert submitted.created
    claim = await broker.claim("w1", caps())
    assert isinstance(claim, Claim)
    assert await broker.complete("w1", "w-1", claim.token, {"ok": True}) == "ok"
    assert [s.created for s in await broker.submit_many([job(id="w-2"), job(id="w-3")])] == [
        True,
        True,
    ]


async def test_an_unreplicated_submission_is_refused_but_exists_on_the_primary(
    broker: Broker, replicated: Replicated
) -> None:
    with replica_frozen(replicated), pytest.raises(NotReplicated) as info:
        await broker.submit(job(id="lagging"))
    assert info.value.acked == 0
    # WAIT cannot undo a write: the job is on the primary, and will replicate.
    found = await broker.get("lagging")
    assert found is not None
    assert found.status == JobStatus.PENDING


async def test_unreplicated_submissions_sent_together_each_hold_their_own_reply(
    broker: Broker, replicated: Replicated
) -> None:
    """Submissions made at once beyond the first SUBMIT_IN_FLIGHT go in one pipeline (group
    commit) with one WAIT: when it times out, every caller is refused, each with the reply of
    its own submission only."""
    await asyncio.gather(*(broker.submit(job()) for _ in range(16)))  # connections made

    async def refused(job_id: str) -> NotReplicated:
        with pytest.raises(NotReplicated) as info:
            await broker.submit(job(id=job_id))
        return info.value

    ids = [f"together-{i}" for i in range(16)]  # more than SUBMIT_IN_FLIGHT: some grouped
    with replica_frozen(replicated):
        errors = await asyncio.gather(*(refused(job_id) for job_id in ids))

    assert [len(e.replies) for e in errors] == [1] * 16
    assert [as_text(e.replies[0][1]) for e in errors] == ids
    assert all(e.acked == 0 for e in errors)


async def test_an_unreplicated_batch_is_refused_but_every_job_is_on_the_primary(
    broker: Broker, replicated: Replicated, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submit_many's calls (three here) go one by one and share one WAIT, after the last."""
    monkeypatch.setattr("shared.broker.BATCH_SCRIPT_JOBS", 2)
    ids = [f"batch-{i}" for i in range(5)]
    with replica_frozen(replicated), pytest.raises(NotReplicated) as info:
        await broker.submit_many([job(id=job_id) for job_id in ids])
    assert info.value.acked == 0
    assert len(info.value.replies) == 3
    assert [j.id for j in await broker.get_many(ids)] == ids


async def test_a_retried_submission_is_acknowledged_only_once_replicated(
    replicated: Replicated, waiting: BrokerSettings
) -> None:
    """The retry of a submission finds the job and has nothing new to write, on a pooled
    connection whose own last write is long replicated. Its WAIT must still cover the
    original submission (Redis 7 counts from the connection's last command; for Redis 6.2,
    which counts from its last write, submit_job.lua rewrites the job's id)."""
    first = connect(replicated.settings(), max_connections=1)
    second = connect(replicated.settings(), max_connections=1)
    try:
        earlier, retrying = Broker(first, waiting), Broker(second, waiting)
        await retrying.submit(job(id="earlier"))  # this connection's last write: replicated
        with replica_frozen(replicated):
            with pytest.raises(NotReplicated):
                await earlier.submit(job(id="retried"))
            with pytest.raises(NotReplicated):
                await retrying.submit(job(id="retried"))
        again = await retrying.submit(job(id="retried"))  # the replica caught up
        assert (again.job_id, again.created) == ("retried", False)
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_unreplicated_claim_is_handed_back_not_run(
    broker: Broker, replicated: Replicated
) -> None:
    """A claim whose token no replica holds could be handed out again by a new primary:
    the worker never gets it, and the job is back in the queue."""
    await broker.submit(job(id="c-1"))
    with replica_frozen(replicated), pytest.raises(NotReplicated):
        await broker.claim("w1", caps())
    back = await broker.get("c-1")
    assert back is not None
    assert (back.status, back.attempts) == (JobStatus.PENDING, 0)
    again = await broker.claim("w2", caps())
    assert isinstance(again, Claim)
    assert again.job.id == "c-1"


async def test_nothing_to_claim_is_not_an_error_while_replicas_lag(
    broker: Broker, replicated: Replicated
) -> None:
    with replica_frozen(replicated):
        result = await broker.claim("w1", caps())
    assert not isinstance(result, Claim)


async def test_the_hub_answers_503_and_the_retry_gets_the_same_job(
    replicated: Replicated, waiting: BrokerSettings
) -> None:
    settings = hub_settings("", redis=replicated.settings(), broker=waiting)
    body = {"id": "via-hub", "service_type": "sim", "payload": {}}
    async with hub_client(settings) as http:
        with replica_frozen(replicated):
            refused = await http.post("/jobs", json=body, headers=CLIENT)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "REDIS_WAIT_REPLICAS" in refused.json()["error"]["message"]
        retried = await http.post("/jobs", json=body, headers=CLIENT)
        assert retried.status_code == 200, retried.text
        assert retried.json()["id"] == "via-hub"


async def test_a_write_to_a_replica_is_a_reconnect_not_a_failure(
    replicated: Replicated, broker_settings: BrokerSettings
) -> None:
    """What a demoted primary answers (READONLY) is a ConnectionError that drops the
    connection, so callers retry it as an outage rather than fail a job over it."""
    replica = connect(RedisSettings(url=replicated.replicas[0].url))
    try:
        with pytest.raises(DemotedPrimary):
            await replica.set("k", "v")
        with pytest.raises(DemotedPrimary):
            await Broker(replica, broker_settings).submit(job(id="to-a-replica"))
        assert await replica.ping()  # a fresh connection: the client is still usable
    finally:
        await replica.aclose()
