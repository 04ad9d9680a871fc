"""Claims come out by priority first and in submission order within a priority."""

from __future__ import annotations

import random

from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from tests.factories import caps, job


async def drain(broker: Broker, worker: str, offer: Capabilities) -> list[str]:
    ids = []
    while isinstance(claim := await broker.claim(worker, offer), Claim):
        ids.append(claim.job.id)
        assert await broker.complete(worker, claim.job.id, claim.token, None) == "ok"
    return ids


async def test_priority_first_then_fifo_even_within_one_millisecond(broker: Broker) -> None:
    rng = random.Random(7)
    priorities = [rng.choice([0, 10, 50, 50, 90, 100]) for _ in range(300)]
    # One pipeline: hundreds of submissions land in the same millisecond.
    submitted = await broker.submit_many(
        [job(id=f"j{i:03}", priority=p) for i, p in enumerate(priorities)]
    )
    assert all(s.created for s in submitted)
    expected = [f"j{i:03}" for i, _ in sorted(enumerate(priorities), key=lambda t: (-t[1], t[0]))]
    assert await drain(broker, "w", caps()) == expected


async def test_order_holds_across_requirement_classes(broker: Broker) -> None:
    # Three classes interleaved: the worker matches all of them, so global order applies.
    shapes = [{}, {"models": ["m"]}, {"hardware": {"cpu_cores": 2}}]
    requests = [
        job(id=f"j{i}", priority=50 if i % 4 else 60, requirements=shapes[i % 3]) for i in range(24)
    ]
    await broker.submit_many(requests)
    offer = caps(models=["m"], hardware={"cpu_cores": 4})
    order = sorted(range(len(requests)), key=lambda i: (-(requests[i].priority or 0), i))
    expected = [f"j{i}" for i in order]
    assert await drain(broker, "w", offer) == expected


async def test_reprioritize_moves_a_job_and_keeps_fifo(broker: Broker) -> None:
    await broker.submit_many([job(id=f"j{i}", priority=10) for i in range(3)])
    assert await broker.reprioritize({"j2": 500, "j1": 500}) == 2
    assert await drain(broker, "w", caps()) == ["j1", "j2", "j0"]


async def test_effective_priority_can_exceed_the_requested_range(broker: Broker) -> None:
    await broker.submit(job(id="normal", priority=100))
    await broker.submit(job(id="boosted", priority=90), effective_priority=120)
    assert await drain(broker, "w", caps()) == ["boosted", "normal"]
    stored = await broker.get("boosted")
    assert stored is not None
    assert (stored.priority, stored.effective_priority) == (90, 120)


async def test_queue_position(broker: Broker) -> None:
    await broker.submit_many([job(id=f"j{i}", priority=p) for i, p in enumerate([10, 90, 50])])
    assert [await broker.queue_position(f"j{i}") for i in range(3)] == [2, 0, 1]
    assert await broker.queue_position("nope") is None


async def test_a_batch_reports_each_job_as_submit_would(broker: Broker) -> None:
    """Across script-call boundaries (100 jobs per call) each job gets its own answer: the
    created ones their rank at submission, a repeated id (in the batch or already queued)
    the original id and nothing written."""
    await broker.submit(job(id="old"))
    ids = [f"b{i:03}" for i in range(230)]
    ids[150] = "b010"  # a repeat inside the batch, in a later script call
    ids[200] = "old"  # a repeat of a job queued before
    submitted = await broker.submit_many([job(id=i) for i in ids])
    assert [s.job_id for s in submitted] == ids
    repeats = {150, 200}
    assert [i for i, s in enumerate(submitted) if not s.created] == sorted(repeats)
    assert all(submitted[i].created_at is None for i in repeats)
    created = [s for i, s in enumerate(submitted) if i not in repeats]
    assert [s.position for s in created] == list(range(1, len(created) + 1))
    assert all(s.created_at for s in created)
    assert await broker.pending_count() == len(created) + 1
