"""Direct handoff (shared/lua/include/handoff.lua): a job submitted while an idle worker that
accepts handoffs waits for work, and that its own claim would take now, is leased to it by
the submission itself and reaches it through its wait, with no claim call. Claim order stays
exact (a better job it could run, a due retry, or another class with policies on keeps the
job on the doorbell path), the lease is a claim's lease (fencing, the reaper, the heartbeat),
and a handed job is never lost nor started twice."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.job import JobStatus
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.factories import caps, gpu, job
from tests.helpers import stream_fields, wait_until
from tests.worker_support import finished, running_worker, sim, worker_settings

OFFER = caps(hardware={"gpus": [gpu(24)]})
SMALL = caps(hardware={"gpus": [gpu(12)]})


@pytest.fixture
def handing(redis: Redis, broker_settings: BrokerSettings) -> Broker:
    """A worker's broker whose claims accept handoffs (worker/links.py gives the runtime
    one)."""
    return Broker(redis, broker_settings, handoff=True)


@pytest.fixture
async def blocking(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=None)
    yield client
    await client.aclose()


async def idle(worker: Broker, worker_id: str, offer: Capabilities = OFFER) -> None:
    """Register `worker_id` and let its claim find nothing: it idles, waiting for work."""
    await worker.register_worker(worker_id, offer)
    found = await worker.claim(worker_id, offer)
    assert isinstance(found, NoClaim)
    assert found.reason == "empty"


async def handed(broker: Broker, worker_id: str) -> list[str]:
    """The job ids handed to `worker_id` and still waiting on its doorbell."""
    out = []
    for token in await broker.redis.lrange(broker.keys.wake(worker_id), 0, -1):
        text = as_text(token)
        if text.startswith("h|"):
            fields = orjson.loads(text.split("|", 2)[2])
            out.append(fields[fields.index("id") + 1])
    return out


async def take(worker: Broker, worker_id: str) -> int | Claim | None:
    """What `worker_id`'s wait for work returns now (a short wait: something is there)."""
    return await worker.wait_for_work(["sim"], 0.05, worker_id=worker_id)


async def claimed_events(broker: Broker) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for fields in await stream_fields(broker.redis, broker.keys.events):
        if as_text(fields[b"type"]) == "claimed":
            out.append((as_text(fields[b"job"]), orjson.loads(fields[b"data"])))
    return out


# -- the handoff -----------------------------------------------------------------------------------


async def test_a_job_submitted_while_a_worker_waits_reaches_its_wait_leased_to_it(
    broker: Broker, handing: Broker, blocking: Redis
) -> None:
    await idle(handing, "w")
    waiter = Broker(blocking, handing.settings)
    woken = asyncio.create_task(waiter.wait_for_work(["sim"], 10, worker_id="w"))
    await broker.submit(job(id="j", payload={"n": 1}))
    claim = await asyncio.wait_for(woken, 5)
    assert isinstance(claim, Claim)
    assert (claim.job.id, claim.job.status, claim.job.worker_id) == ("j", JobStatus.ACTIVE, "w")
    assert claim.job.payload == {"n": 1}
    stored = await broker.get("j")
    assert stored is not None
    assert (stored.status, stored.worker_id) == (JobStatus.ACTIVE, "w")
    assert await broker.lease_count("w") == 1
    assert await broker.pending_count() == 0
    # A claim's event, marked as a handoff; the worker is no longer idle.
    assert [(j, e["worker_id"], e.get("handoff")) for j, e in await claimed_events(broker)] == [
        ("j", "w", 1)
    ]
    assert await broker.redis.zcard(broker.keys.idle_workers("sim")) == 0
    assert await handing.complete("w", "j", claim.token, {"ok": True}) == "ok"


async def test_a_handed_job_is_the_job_as_stored_field_for_field(
    broker: Broker, handing: Broker, blocking: Redis
) -> None:
    """The handed claim carries the job hash as the lease left it: every field equal to
    what a read of the stored job gives, optional ones included, though the job was never
    queued and the token is built from what the submission and the lease wrote, not read
    back from the hash."""
    await idle(handing, "w", caps(hardware={"gpus": [gpu(24)]}, models=["sdxl"]))
    request = job(
        id="full",
        customer_id="acme",
        priority=70,
        payload={"prompt": "a cat", "steps": 4},
        requirements={"hardware": {"gpu": {"memory_gb": 16}}, "models": ["sdxl"]},
        tags=["nightly", "cats"],
        deadline="2031-05-01T10:00:00+02:00",
        timeout_seconds=90,
        max_retries=2,
    )
    await broker.submit(request)
    claim = await Broker(blocking, handing.settings).wait_for_work(["sim"], 5, worker_id="w")
    assert isinstance(claim, Claim)
    stored = await broker.get("full")
    assert stored is not None
    assert claim.job == stored
    assert (claim.job.status, claim.job.worker_id, claim.job.customer_id) == (
        JobStatus.ACTIVE,
        "w",
        "acme",
    )
    assert (claim.job.tags, claim.job.timeout_seconds, claim.job.max_retries) == (
        ["nightly", "cats"],
        90,
        2,
    )
    assert claim.job.preferred_models == ["sdxl"]
    assert claim.job.event_seq == 2  # accepted, claimed
    assert await handing.complete("w", "full", claim.token, {"ok": True}) == "ok"


async def test_a_running_worker_runs_a_job_handed_to_it_without_a_claim_call(
    broker: Broker, redis_url: str
) -> None:
    async with running_worker(worker_settings(redis_url, SERVICES="simulation")) as worker:

        async def waiting() -> bool:
            return (
                await broker.redis.zscore(broker.keys.idle_workers("simulation"), "w1") is not None
            )

        await wait_until(waiting, timeout=10)
        taken_by_claims: list[str] = []
        claim = worker.broker.claim

        async def counted(*args: Any, **kwargs: Any) -> Any:
            result = await claim(*args, **kwargs)
            if isinstance(result, Claim):
                taken_by_claims.append(result.job.id)
            return result

        setattr(worker.broker, "claim", counted)  # noqa: B010 (an instance's method, wrapped)
        submitted = await broker.submit(job("simulation", payload=sim()))
        done = await finished(broker, submitted.job_id)
        assert (done.status, done.worker_id) == (JobStatus.COMPLETED, "w1")
        assert taken_by_claims == []
    events = await claimed_events(broker)
    assert [(j, e.get("handoff")) for j, e in events] == [(submitted.job_id, 1)]


async def test_a_batch_hands_one_job_to_each_idle_worker_in_submission_order(
    broker: Broker, handing: Broker
) -> None:
    for worker_id in ("a", "b"):
        await idle(handing, worker_id)
    await broker.submit_many([job(id=f"j{n}") for n in range(3)])
    assert await handed(broker, "a") == ["j0"]
    assert await handed(broker, "b") == ["j1"]
    assert await broker.pending_count() == 1  # j2: nobody idle is left
    assert [j for j, _ in await claimed_events(broker)] == ["j0", "j1"]


async def test_the_smallest_idle_worker_that_can_run_the_job_gets_it(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "big", OFFER)
    await idle(handing, "small", SMALL)
    await broker.submit(job(id="needs-16", requirements={"hardware": {"gpu": {"memory_gb": 16}}}))
    await broker.submit(job(id="needs-8", requirements={"hardware": {"gpu": {"memory_gb": 8}}}))
    assert await handed(broker, "big") == ["needs-16"]
    assert await handed(broker, "small") == ["needs-8"]


async def test_a_job_preferring_models_goes_to_the_idle_worker_that_has_them_warm(
    redis: Redis, broker_settings: BrokerSettings, broker: Broker
) -> None:
    worker = Broker(
        redis, dataclasses.replace(broker_settings, scheduling_policies=("affinity",)), handoff=True
    )
    await idle(worker, "cold", SMALL)
    warm = caps(hardware={"gpus": [gpu(24)]}, models=["sdxl"], warm_models=["sdxl"])
    await idle(worker, "warm", warm)
    await broker.submit(job(id="j", requirements={"models": ["sdxl"]}))
    assert await handed(broker, "warm") == ["j"]
    assert await handed(broker, "cold") == []


# -- exact order -----------------------------------------------------------------------------------


async def test_a_released_job_ranking_first_keeps_the_new_job_on_the_doorbell(
    broker: Broker, handing: Broker
) -> None:
    await broker.submit(job(id="older"))
    held = await broker.claim("other", OFFER)
    assert isinstance(held, Claim)
    await idle(handing, "w")
    assert await broker.release("other", "older", held.token) == "ok"  # rings, hands nothing
    await broker.submit(job(id="newer"))
    assert await handed(broker, "w") == []
    taken = await handing.claim("w", OFFER)
    assert isinstance(taken, Claim)
    assert taken.job.id == "older"


async def test_a_due_retry_keeps_the_new_job_on_the_doorbell(
    broker: Broker, handing: Broker
) -> None:
    await broker.submit(job(id="retried", max_retries=3))
    held = await broker.claim("other", OFFER)
    assert isinstance(held, Claim)
    assert await broker.fail("other", "retried", held.token, "boom") == "retrying"
    await idle(handing, "w")  # while the retry backs off

    async def due() -> bool:
        stored = await broker.get("retried")
        assert stored is not None
        assert stored.retry_at is not None
        return await broker.reads.now_ms() >= stored.retry_at

    await wait_until(due, timeout=5)
    await broker.submit(job(id="newer"))
    assert await handed(broker, "w") == []
    taken = await handing.claim("w", OFFER)
    assert isinstance(taken, Claim)
    assert taken.job.id == "retried"


async def test_a_higher_priority_job_is_handed_over_and_a_lower_one_waits_behind_it(
    broker: Broker, handing: Broker
) -> None:
    await broker.submit(job(id="low", priority=10, requirements={"models": ["flux"]}))
    await idle(handing, "w")  # offers no flux: "low" is not its job
    await broker.submit(job(id="high", priority=90))
    assert await handed(broker, "w") == ["high"]
    await broker.submit(job(id="later", priority=90))
    assert await handed(broker, "w") == ["high"]  # not idle any more: one handoff at a time


async def test_a_job_handed_over_at_its_submission_is_never_queued(
    broker: Broker, handing: Broker
) -> None:
    """The submission decides the handoff before queueing the job, so a handed job never
    enters (and leaves) the pending structures: its only sorted-set write is its lease
    deadline, and no class document is made for it. Its position is still what the queue
    would have given it: the pending jobs ranked ahead (here one of a service the worker
    does not offer)."""
    await broker.submit(job("other", id="ahead", priority=90))
    await idle(handing, "w")  # offers sim only
    before = await broker.redis.info("commandstats")
    submitted = await broker.submit(job(id="j", priority=50))
    after = await broker.redis.info("commandstats")
    assert await handed(broker, "w") == ["j"]
    assert submitted.position == 1
    zadds = after["cmdstat_zadd"]["calls"] - before["cmdstat_zadd"]["calls"]
    assert zadds == 1  # jobs:active, the lease deadline
    assert await broker.redis.zscore(broker.keys.active, "j") is not None
    assert await broker.redis.zrange(broker.keys.service_classes("sim"), 0, -1) == []
    assert await broker.redis.hlen(broker.keys.classes) == 1  # "ahead"'s class
    assert await broker.pending_count() == 1


async def test_within_a_priority_jobs_go_to_idle_workers_in_submission_order(
    broker: Broker, handing: Broker
) -> None:
    for worker_id in ("a", "b", "c"):
        await idle(handing, worker_id)
    for n in range(4):
        await broker.submit(job(id=f"j{n}", priority=50))
    assert [await handed(broker, w) for w in ("a", "b", "c")] == [["j0"], ["j1"], ["j2"]]
    assert [j for j, _ in await claimed_events(broker)] == ["j0", "j1", "j2"]
    taken = await handing.claim("a", OFFER)  # "a" claims again: j3 is next
    assert isinstance(taken, Claim)
    assert taken.job.id == "j0"  # its handed job first: the claim answers with it
    follow_up = await handing.claim("a", OFFER)
    assert isinstance(follow_up, Claim)
    assert follow_up.job.id == "j3"


async def test_with_policies_on_only_a_job_whose_class_is_alone_is_handed_over(
    redis: Redis, broker_settings: BrokerSettings, broker: Broker
) -> None:
    worker = Broker(
        redis, dataclasses.replace(broker_settings, scheduling_policies=("fair",)), handoff=True
    )
    await broker.submit(job(id="other-class", priority=10, customer_id="acme"))
    await worker.register_worker("w", OFFER)
    taken = await worker.claim("w", OFFER)
    assert isinstance(taken, Claim)  # "other-class" runs; its class is empty now
    assert await worker.claim("w", OFFER) == NoClaim("empty", None)
    await broker.submit(job(id="alone", priority=10))
    assert await handed(broker, "w") == ["alone"]
    await worker.complete("w", "other-class", taken.token, None)
    # Another class waiting: fair share might choose it instead, so nothing is handed over.
    await worker.complete("w", "alone", (await _token(broker, "alone")), None)
    await broker.submit(job(id="waiting", priority=10, requirements={"models": ["flux"]}))
    assert await worker.claim("w", OFFER) == NoClaim("empty", None)
    await broker.submit(job(id="new", priority=50))
    assert await handed(broker, "w") == []


async def _token(broker: Broker, job_id: str) -> str:
    return as_text(await broker.redis.hget(broker.keys.job(job_id), "token") or b"")


# -- who is never handed a job ---------------------------------------------------------------------


async def test_a_worker_whose_claims_do_not_accept_handoffs_is_woken_as_before(
    broker: Broker,
) -> None:
    await idle(broker, "w")
    await broker.submit(job(id="j"))
    assert await handed(broker, "w") == []
    assert await broker.pending_count() == 1
    assert await broker.redis.llen(broker.keys.notify("sim")) == 1


@pytest.mark.parametrize("state", ["paused", "draining"])
async def test_a_paused_or_draining_worker_is_not_handed_a_job(
    broker: Broker, handing: Broker, state: str
) -> None:
    await idle(handing, "w")
    await broker.set_worker_state("w", state)  # type: ignore[arg-type]
    await broker.submit(job(id="j"))
    assert await handed(broker, "w") == []
    assert await broker.pending_count() == 1


async def test_a_worker_whose_heartbeat_lapsed_is_not_handed_a_job(
    redis: Redis, broker_settings: BrokerSettings, broker: Broker
) -> None:
    short = Broker(
        redis,
        dataclasses.replace(broker_settings, lease_timeout=0.3, heartbeat_interval=0.1),
        handoff=True,
    )
    await idle(short, "w")
    lapsed_at = await broker.redis.zscore(broker.keys.workers, "w")
    assert lapsed_at is not None

    async def lapsed() -> bool:
        return await broker.reads.now_ms() > lapsed_at

    await wait_until(lapsed, timeout=5)
    await broker.submit(job(id="j"))
    assert await handed(broker, "w") == []
    assert await broker.pending_count() == 1


async def test_a_worker_that_cannot_run_the_job_is_not_handed_it(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "w", SMALL)
    await broker.submit(job(id="j", requirements={"hardware": {"gpu": {"memory_gb": 16}}}))
    assert await handed(broker, "w") == []


@pytest.mark.parametrize(("customer", "expected"), [("globex", []), ("acme", ["new"])])
async def test_a_worker_locked_to_another_customer_is_not_handed_its_job(
    broker: Broker, handing: Broker, customer: str, expected: list[str]
) -> None:
    await broker.submit(
        job(id="locked", customer_id="acme", requirements={"customer_isolation": "loose"})
    )
    await handing.register_worker("w", OFFER)
    taken = await handing.claim("w", OFFER)
    assert isinstance(taken, Claim)
    assert await handing.claim("w", OFFER) == NoClaim("empty", None)  # idle, holding "locked"
    await broker.submit(job(id="new", customer_id=customer))
    assert await handed(broker, "w") == expected


# -- the lease, fencing and races ------------------------------------------------------------------


async def test_the_handed_token_completes_once_and_then_is_stale(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "w")
    await broker.submit(job(id="j"))
    claim = await take(handing, "w")
    assert isinstance(claim, Claim)
    assert await handing.complete("w", "j", claim.token, {"n": 1}) == "ok"
    assert await handing.complete("w", "j", claim.token, {"n": 2}) == "stale"
    done = await broker.get("j")
    assert done is not None
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"n": 1})


async def test_a_claim_made_as_the_handoff_lands_takes_the_handed_job_exactly_once(
    broker: Broker, handing: Broker
) -> None:
    """The worker popped a wake-up for another job and claims just as a job is handed to it:
    the claim answers with the handed job and takes its token off the doorbell, so the
    worker's next wait does not start it again."""
    await idle(handing, "w")
    await broker.redis.lpush(broker.keys.wake("w"), "0")  # a wake-up rung before the handoff
    await broker.submit(job(id="j"))
    assert await broker.redis.lrange(broker.keys.wake("w"), 1, -1) == [b"0"]  # kept behind
    claim = await handing.claim("w", OFFER)
    assert isinstance(claim, Claim)
    assert claim.job.id == "j"
    assert await handed(broker, "w") == []
    assert await take(handing, "w") == 0  # the wake-up only
    assert await handing.claim("w", OFFER) == NoClaim("empty", None)
    assert await handing.complete("w", "j", claim.token, None) == "ok"


async def test_a_job_handed_to_a_worker_that_dies_is_recovered_and_its_token_dropped(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "w")
    await broker.submit(job(id="j", max_retries=3))
    token = await _token(broker, "j")

    async def recovered() -> bool:
        report = await broker.reap()
        return any(job_id == "j" for _, job_id, _ in report.recovered)

    await wait_until(recovered, timeout=10)  # its heartbeat lapsed: the reaper requeues it
    assert await handed(broker, "w") == []
    assert await handing.complete("w", "j", token, None) == "stale"
    await handing.register_worker("other", OFFER)
    # Claimable again at once (a lost lease costs an attempt); "other" takes it.
    again = await handing.claim("other", OFFER)
    assert isinstance(again, Claim)
    assert (again.job.id, again.job.attempts) == ("j", 1)


async def test_a_worker_restarting_under_the_same_id_never_starts_its_previous_runs_handoff(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "w")
    await broker.submit(job(id="j"))
    await handing.register_worker("w", OFFER)  # the restart
    assert await take(handing, "w") is None

    # Not reported as running, the lease goes back as orphaned after the grace period.
    async def orphaned() -> bool:
        await handing.heartbeat("w", running={})
        return await broker.pending_count() == 1

    await wait_until(orphaned, timeout=10)
    stored = await broker.get("j")
    assert stored is not None
    assert stored.status == JobStatus.PENDING


async def test_a_worker_leaving_gives_back_a_job_handed_to_it(
    broker: Broker, handing: Broker
) -> None:
    await idle(handing, "w")
    await broker.submit(job(id="j"))
    assert await handing.deregister_worker("w") == 1
    assert await broker.redis.exists(broker.keys.wake("w")) == 0
    assert await broker.pending_count() == 1
