"""The chaos matrix (issue 6), faults of the shared parts: Redis killed and restarted, a
hub killed while another serves, a hub's Redis connections silently dropped. Each test's
docstring says what it does ("Does:") and what it proves ("Asserts:") for RELIABILITY.md
(see scripts/reliability.py)."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import httpx
import pytest

from tests.chaos.clients import (
    Submitter,
    completed_seen,
    operator_events,
    sim_job,
    sse_events,
    sse_stream,
    submit_batch,
    wait_all_finished,
)
from tests.chaos.support import (
    BLACKHOLE_COMMAND_TIMEOUT,
    CLIENT,
    LEASE_TIMEOUT,
    SILENT_DROP_BOUND,
    Chaos,
    hub_ready,
    read_events,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


# -- 3 -----------------------------------------------------------------------------------


async def test_redis_restart(chaos: Chaos) -> None:
    """Does: a hub and 3 workers run while 20 clients submit 300 short jobs one by one over
    REST (more than the hub's eight submissions in flight, so its submissions go several to
    a pipeline, shared/group_commit.py, and a kill meets pipelines in flight) and an
    operator WebSocket on the hub follows all events. Twice during the load
    Redis (AOF, appendfsync always) is killed with `kill -9` and started again on the same
    port and data directory: first as soon as the hub (503s) and every worker (its one
    "Redis unreachable" log line) have noticed, then after an outage longer than the lease,
    so every worker is presumed dead when Redis returns. Clients retry unacknowledged
    submissions with the same job id.

    Asserts: no acknowledged submission (201, or 200 for a retry that had been written) is
    lost; the hub and every worker reconnect by themselves (each worker claims jobs after
    the last restart; the WebSocket opened before the restarts delivers every job's
    `completed` event); the run finishes with every job completed exactly once (jobs
    running during the long outage run again; their outcome is recorded once)."""
    hub = await chaos.start_hub()
    workers = ["w1", "w2", "w3"]
    for worker_id in workers:
        chaos.start_worker(worker_id, CONCURRENT_JOBS="2")
    await chaos.registered(*workers)
    jobs = [sim_job(f"rr-{i:03d}", steps=2, step_ms=25) for i in range(300)]
    ids = [j["id"] for j in jobs]
    submitter = Submitter([hub.url])
    outages: list[float] = []
    acked_at_kill: list[int] = []

    def outages_logged() -> list[int]:
        """Per worker, the outages it logged (shared/outage.py: one line per outage)."""
        return [chaos.fleet.by_name(w)[-1].log().count("Redis unreachable (") for w in workers]

    def every_outage_ended() -> bool:
        logs = [chaos.fleet.by_name(w)[-1].log() for w in workers]
        return all(
            log.count("Redis reachable again") >= log.count("Redis unreachable (") for log in logs
        )

    async def outage(after_acks: int, at_least: float) -> float:
        """Kill Redis once `after_acks` submissions were acknowledged; start it again when
        the hub and all workers have noticed and `at_least` seconds have passed."""
        await wait_until(lambda: len(submitter.acked) >= after_acks or load.done(), timeout=30)
        assert not load.done(), "the load finished before the restart"
        # Each process logs one line per outage and one when Redis is back; a worker that has
        # not yet had a call succeed since the last restart is still in that outage and would
        # log nothing new for this one.
        await wait_until(every_outage_ended, timeout=20, message="every worker saw Redis back")
        acked_at_kill.append(len(submitter.acked))
        failures, marks = submitter.failures["503"], outages_logged()
        killed = chaos.server.kill()

        seen: dict[str, object] = {}

        def noticed() -> bool:
            seen.update(
                refused=submitter.failures["503"] - failures,
                logged=[b - m for b, m in zip(outages_logged(), marks, strict=True)],
                down_s=round(time.time() - killed, 2),
            )
            return (
                submitter.failures["503"] > failures
                and all(b > m for b, m in zip(outages_logged(), marks, strict=True))
                and time.time() - killed >= at_least  # the outage's length is the scenario
            )

        try:
            await wait_until(noticed, timeout=20, interval=0.02, message="outage noticed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {seen}") from None
        chaos.server.start()
        outages.append(time.time() - killed)
        return time.time()

    async with operator_events(hub.url) as received:
        try:
            load = asyncio.create_task(submitter.run(jobs, concurrency=20))
            await outage(after_acks=80, at_least=0.0)
            restarted = await outage(after_acks=160, at_least=LEASE_TIMEOUT + 1.0)
            await load
        finally:
            await submitter.close()
        assert sorted(submitter.acked) == sorted(ids)
        await wait_all_finished(chaos, ids, timeout=60)
        await wait_until(
            lambda: completed_seen(received) >= set(ids),
            timeout=20,
            message="the WebSocket delivers every outcome",
        )
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    claimed_after = {
        e.worker_id for evs in events.values() for e in evs
        if e.type == "claimed" and e.ts_ms > restarted * 1000
    }  # fmt: skip
    rerun = sum(1 for evs in events.values() if sum(e.type == "claimed" for e in evs) > 1)
    chaos.report(
        acc,
        appendfsync=chaos.server.appendfsync,
        acked_at_kills="/".join(map(str, acked_at_kill)),
        redis_down_s="/".join(f"{o:.2f}" for o in outages),
        retried_submissions=sum(submitter.failures.values()),
        replayed_200=len(submitter.replayed),
        jobs_run_twice=rerun,
    )
    acc.check()
    assert acc.completed == len(ids)
    assert set(workers) <= claimed_after, f"only {claimed_after} claimed after the restart"


# -- 4 -----------------------------------------------------------------------------------


async def test_hub_failover(chaos: Chaos) -> None:
    """Does: two hubs share one Redis; 3 workers run; 4 clients submit 200 jobs round-robin
    over both hubs, falling over to the other hub on a connection error. An operator
    WebSocket (all events) and an SSE stream follow hub B. After 50 acknowledgements hub A
    is killed with `kill -9`; after 120, new submissions are held while it restarts on the
    same port.

    Asserts: while A is down, B keeps acknowledging submissions; B's WebSocket delivers a
    `completed` event for every job and B's SSE stream follows a job submitted to A before
    the kill to its `completed` event; the restarted A serves submissions, reads of jobs
    submitted to B, and SSE again; every job completes exactly once."""
    hub_a = await chaos.start_hub("hub-a")
    hub_b = await chaos.start_hub("hub-b")
    workers = ["w1", "w2", "w3"]
    for worker_id in workers:
        chaos.start_worker(worker_id, CONCURRENT_JOBS="2")
    await chaos.registered(*workers)
    jobs = [sim_job(f"hf-{i:03d}", steps=2, step_ms=25) for i in range(200)]
    long_job = sim_job("hf-long", steps=30, step_ms=100)
    submitter = Submitter([hub_a.url, hub_b.url])
    async with operator_events(hub_b.url) as received:
        try:
            await submitter.submit(long_job, hub=0)
            follow = asyncio.create_task(sse_events(hub_b.url, "hf-long"))
            load = asyncio.create_task(submitter.run(jobs, concurrency=4, hubs=2))
            await wait_until(lambda: len(submitter.acked) >= 50 or load.done(), timeout=30)
            assert not load.done(), "the load finished before the kill"
            killed = chaos.fleet.by_name("hub-a")[-1].kill()
            at_kill = submitter.served.copy()
            await wait_until(lambda: len(submitter.acked) >= 120 or load.done(), timeout=30)
            served_by_b_alone = submitter.served[1] - at_kill[1]
            from_the_dead = [
                j for j, hub in submitter.acked_by.items()
                if hub == 0 and submitter.sent_at[j] > killed
            ]  # fmt: skip
            assert not from_the_dead, f"a dead hub acknowledged {from_the_dead}"
            # Hold the rest of the load while A restarts, so some of it is left for A.
            submitter.flowing.clear()
            assert not load.done(), "the load finished before the restart"
            rejoin_started = time.time()
            restarted = chaos.fleet.hub("hub-a", port=hub_a.port)
            await hub_ready(restarted)
            rejoined = time.time()
            at_restart = submitter.served.copy()
            submitter.flowing.set()
            await load
            assert submitter.served[0] > at_restart[0], "the restarted hub served nothing"
            extra = sim_job("hf-after", steps=2, step_ms=25)
            await submitter.submit(extra, hub=0)
            assert submitter.served[0] > at_restart[0] + 1
            sse_after = await asyncio.wait_for(sse_stream(hub_a.url, "hf-after"), 30)
            sse_long = await asyncio.wait_for(follow, 30)
            ids = [j["id"] for j in (long_job, *jobs, extra)]
            await wait_all_finished(chaos, ids, timeout=60)

            await wait_until(
                lambda: completed_seen(received) >= set(ids),
                timeout=20,
                message="B's WebSocket delivers every outcome",
            )
        finally:
            await submitter.close()
    async with httpx.AsyncClient(base_url=hub_a.url, headers=CLIENT, timeout=10) as http:
        via_b = [j for j, hub in submitter.acked_by.items() if hub == 1][-1]
        assert (await http.get(f"/jobs/{via_b}")).json()["status"] == "completed"
    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    chaos.report(
        acc,
        acked_by_b_while_a_down=served_by_b_alone,
        acked_by_a_after_rejoin=submitter.served[0] - at_restart[0],
        hub_a_down_s=rejoin_started - killed,
        hub_a_restart_s=rejoined - rejoin_started,
        failovers=sum(submitter.failures.values()),
    )
    acc.check()
    assert acc.completed == len(ids)
    assert served_by_b_alone > 0
    assert sse_long[0] == "snapshot", sse_long
    assert sse_long[-1] == "completed", sse_long
    # The restarted hub streams the job to its end: its completed event, or, where the job
    # finished before the stream began, the snapshot of it completed.
    last_name, last_data = sse_after[-1]
    assert last_name == "completed" or (
        last_name == "snapshot" and last_data["status"] == "completed"
    ), sse_after


# -- 4b ----------------------------------------------------------------------------------


async def test_hub_blackhole(chaos: Chaos) -> None:
    """Does: a hub reaches Redis through the test's TCP proxy (one worker connects
    directly; the hub's REDIS_COMMAND_TIMEOUT_SECONDS is 3); once a job has been followed to completion over SSE, the proxy silently
    black-holes every open connection (no reset, no close: a NAT or firewall that forgot
    them) while new connections flow normally. A job that runs 12 s is then submitted and
    followed over SSE on the same hub: longer than the submission can take however many of
    the hub's black-holed connections it meets (each costs it one 3 s timeout), so the job
    still runs when its stream opens, and its end can only reach the stream as an event.

    Asserts: the hub notices and reconnects by itself: the new job's SSE stream reaches
    `completed` within 40 s of the drop, and every job completes exactly once."""
    proxy = await chaos.proxy()
    hub = await chaos.start_hub(
        REDIS_URL=proxy.url, REDIS_COMMAND_TIMEOUT_SECONDS=BLACKHOLE_COMMAND_TIMEOUT
    )
    chaos.start_worker("w1")
    await chaos.registered("w1")
    ids: list[str] = []
    names: list[str] = []
    first_request_s = -1.0
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=60) as http:
        ids += await submit_batch(http, [sim_job("hb-0", steps=5, step_ms=100)])
        before = await asyncio.wait_for(sse_events(hub.url, "hb-0"), 30)
        assert before[-1] == "completed", before
        dropped = proxy.blackhole()
        try:
            ids += await submit_batch(http, [sim_job("hb-1", steps=24, step_ms=500)])
            first_request_s = time.time() - dropped
            left = SILENT_DROP_BOUND - (time.time() - dropped)
            follow = asyncio.create_task(sse_events(hub.url, "hb-1", timeout=60))
            done, _ = await asyncio.wait({follow}, timeout=max(left, 1.0))
            if follow in done:
                names = follow.result()
            else:
                follow.cancel()
            ready = (await http.get("/ready")).json()
        finally:
            await wait_all_finished(chaos, ids, timeout=30)
            acc = await chaos.account(ids)
            chaos.report(acc, first_request_after_drop_s=first_request_s, sse_events=len(names))
    acc.check()
    assert names[-1:] == ["completed"], (
        f"no event reached SSE within {SILENT_DROP_BOUND:g} s of the drop (got {names}); "
        f"/ready says {ready}"
    )


# -- issue 16: the scripts' library lost while the fleet runs ------------------------------


async def test_library_lost(chaos: Chaos) -> None:
    """Does: a hub and 2 workers (4 slots each) run short jobs submitted over REST. Three
    times, once 100 more jobs have completed, Redis loses the scripts' code while calls are
    in flight: `FUNCTION FLUSH` and `SCRIPT FLUSH` (what a restart without persistence, or
    a failover to a node that never got the library, leaves), and 150 more jobs are
    submitted at once, so the hub's submissions and the workers' claims and completions all
    meet "Function not found".

    Asserts: every job completes exactly once (one `completed` event) with its own result;
    jobs complete again after every loss, without a restart of any process (the time from
    each loss to the next completion, printed); the library is back in Redis at the end."""
    hub = await chaos.start_hub()
    for name in ("w1", "w2"):
        chaos.start_worker(name, CONCURRENT_JOBS="4")
    completed_key = chaos.keys.finished("completed")

    async def completed(count: int) -> bool:
        return int(await chaos.redis.zcard(completed_key)) >= count

    to_first_completion: list[float] = []
    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        ids = await submit_batch(
            http, [sim_job(f"ll-0-{i:03d}", steps=1, step_ms=2) for i in range(150)]
        )
        for loss in range(1, 4):
            target = 100 * loss
            await wait_until(partial(completed, target), timeout=60, message=f"{target} done")
            await chaos.redis.function_flush()
            await chaos.redis.script_flush()
            lost_at = time.monotonic()
            at_loss = int(await chaos.redis.zcard(completed_key))
            ids += await submit_batch(
                http, [sim_job(f"ll-{loss}-{i:03d}", steps=1, step_ms=2) for i in range(150)]
            )
            await wait_until(
                partial(completed, at_loss + 1), timeout=30, message="a completion after the loss"
            )
            to_first_completion.append(time.monotonic() - lost_at)
    await wait_all_finished(chaos, ids, timeout=60)

    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    jobs = await chaos.broker.get_many(ids)
    wrong_result = [j.id for j in jobs if (j.result or {}).get("result") != j.id]
    libraries = await chaos.redis.function_list(library="emp_*")
    chaos.report(
        acc,
        losses=len(to_first_completion),
        loss_to_next_completion_s="/".join(f"{s:.2f}" for s in to_first_completion),
        library_loaded_at_end=len(libraries),
    )
    acc.check()
    assert acc.completed == len(ids)
    assert not wrong_result, wrong_result
    assert len(libraries) == 1


# Jobs per batch in test_redis_kill_during_batches: three of the hub's script calls (100
# jobs each, shared/broker.py BATCH_SCRIPT_JOBS), so a kill can fall between them.
BATCH = 250


async def test_redis_kill_during_batches(chaos: Chaos) -> None:
    """Does: a hub and 2 workers (4 slots each) run short jobs that 4 clients submit as
    batches of 250 over REST (`POST /jobs/batch`, 16 batches, client-chosen ids). The hub
    writes each batch's script calls (100 jobs each: three a batch) one by one as it packs
    them (shared/scripts.py call_streamed), so a kill can fall between a batch's calls:
    once 4 batches have been acknowledged and the submission counter shows a batch part
    written (`jobs:seq`, which each call advances by its jobs, is not a multiple of 250),
    Redis (AOF, appendfsync always) is killed with `kill -9`, and started again once a
    client has been refused (503 or a dropped connection). Clients send an
    unacknowledged batch again, whole and with the same ids.

    Asserts: every batch is acknowledged in the end, with every one of its jobs (a job that
    a batch cut short had written comes back as already created); every job completes
    exactly once, whether its first attempt's calls ran before the kill or not."""
    hub = await chaos.start_hub()
    for name in ("w1", "w2"):
        chaos.start_worker(name, CONCURRENT_JOBS="4")
    batches = [
        [sim_job(f"kb-{b:02d}-{i:03d}", steps=1, step_ms=2) for i in range(BATCH)]
        for b in range(16)
    ]
    ids = [job["id"] for batch in batches for job in batch]
    acked: list[str] = []
    existing: list[str] = []
    refused = 0
    queue = list(reversed(batches))

    async def lane(http: httpx.AsyncClient) -> None:
        nonlocal refused
        while queue:
            batch = queue.pop()
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = await http.post("/jobs/batch", json={"jobs": batch})
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code in (200, 201):
                    answered = response.json()["jobs"]
                    assert [j["id"] for j in answered] == [j["id"] for j in batch]
                    acked.extend(j["id"] for j in answered)
                    existing.extend(j["id"] for j in answered if not j["created"])
                    break
                if response is not None:
                    assert response.status_code == 503, response.text
                refused += 1
                assert time.monotonic() < deadline, "a batch was never acknowledged"
                await asyncio.sleep(0.05)  # retry pacing while Redis is down

    async with httpx.AsyncClient(base_url=hub.url, headers=CLIENT, timeout=30) as http:
        load = asyncio.gather(*(lane(http) for _ in range(4)))
        await wait_until(lambda: len(acked) >= 4 * BATCH or load.done(), timeout=60)
        assert not load.done(), "the load finished before the kill"

        async def a_batch_part_written() -> bool:
            return int(await chaos.redis.get(chaos.keys.seq) or 0) % BATCH != 0

        await wait_until(a_batch_part_written, timeout=30, interval=0.001)
        acked_at_kill = len(acked) // BATCH
        killed = chaos.server.kill()
        await wait_until(lambda: refused > 0, timeout=20, message="a client was refused")
        chaos.server.start()
        down_s = time.time() - killed
        await load
    assert sorted(acked) == sorted(ids)
    await wait_all_finished(chaos, ids, timeout=90)

    events = await read_events(chaos.redis, chaos.keys)
    acc = await chaos.account(ids, events=events)
    chaos.report(
        acc,
        appendfsync=chaos.server.appendfsync,
        batches=len(batches),
        acked_batches_at_kill=acked_at_kill,
        redis_down_s=f"{down_s:.2f}",
        refused_attempts=refused,
        written_before_the_kill=len(existing),
    )
    acc.check()
    assert acc.completed == len(ids)
