"""Redis's instructions per script call on the hot paths, counted, not timed.

The other benchmarks time things on a shared 2-core machine whose speed moves by tens of
percent between runs, so a change worth a few percent of a script's cost cannot be seen in
them. Here redis-server runs under valgrind's callgrind, collecting only inside
`fcallCommand` (every FCALL, with the commands its script calls, and nothing of the
networking), and the count is the instructions Redis executed: the same on every run of the
same code, to within a percent or two (random job ids, Lua's garbage collector). Each case's
set-up runs on a plain server first; the counted one loads its data, so only the measured
calls are counted.

Skipped, with a line saying so, where valgrind is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bench.claim import OFFER, _requests
from bench.common import bench_client, table
from bench.floor import DRAIN_OFFER, DRAIN_REQUEST, DRAIN_WORKER
from shared.broker import Broker, Claim
from shared.embedded_redis import free_port
from shared.embedded_redis.binary import require_server_binary
from shared.embedded_redis.readiness import ReadyOutcome, wait_ready

# One measured step of a case: (broker, encoded capabilities, step number) -> None.
Step = Callable[[Broker, bytes, int], Awaitable[None]]
Setup = Callable[[Broker, bytes], Awaitable[None]]

CLAIM_DEPTH = 5_000  # pending jobs in the claim case, 1% of them matching the worker


@contextlib.asynccontextmanager
async def _redis(data: Path, *wrapper: str) -> AsyncIterator[Redis]:
    """A redis-server keeping its RDB in `data` (loading it at start where it exists), run
    by `wrapper` (e.g. valgrind) if given; shut down with SAVE on leaving."""
    port = free_port()
    config = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
    config += ["--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [*wrapper, str(require_server_binary()), *config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Under valgrind redis-server starts about 50x slower than alone.
        deadline = time.monotonic() + 60
        ready = await asyncio.to_thread(wait_ready, server, "127.0.0.1", port, None, deadline)
        if ready is not ReadyOutcome.READY:
            raise RuntimeError(f"redis-server did not start: {ready.value}")
        client = bench_client(f"redis://127.0.0.1:{port}")
        try:
            yield client
            with contextlib.suppress(OSError, RedisConnectionError):
                await client.shutdown(save=True)
        finally:
            await client.aclose()
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=60)


def callgrind_total(out: Path) -> int:
    """The instructions a callgrind output file counted: its totals line (at exit), or its
    summary line (a dump by callgrind_control)."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


async def _per_call(setup: Setup, step: Step, n: int, *, handoff: bool = True) -> float:
    """Instructions inside FCALL per `step`, `n` of them, after `setup`. The set-up runs on
    a plain server whose data (and script library) the counted one loads, so nothing of it
    is counted."""
    with tempfile.TemporaryDirectory(prefix="emp-bench-cg-") as tmp:
        data, out = Path(tmp), Path(tmp) / "callgrind.out"
        async with _redis(data) as client:
            broker = Broker(client, handoff=handoff)
            await setup(broker, broker.encode_capabilities(DRAIN_OFFER))
        counted = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        counted += ["--collect-atstart=no", "--toggle-collect=fcallCommand"]
        async with _redis(data, *counted) as client:
            broker = Broker(client, handoff=handoff)
            caps = broker.encode_capabilities(DRAIN_OFFER)
            for i in range(n):
                await step(broker, caps, i)
        return callgrind_total(out) / n


# -- the cases ---------------------------------------------------------------------------


async def _busy_worker(broker: Broker, caps: bytes) -> None:
    """A registered worker that is not idle: the submission has nobody to hand its job to
    (and the library is loaded before the count starts)."""
    await broker.register_worker(DRAIN_WORKER, DRAIN_OFFER)


async def _submit(broker: Broker, caps: bytes, i: int) -> None:
    await broker.submit(DRAIN_REQUEST)


async def _idle_worker(broker: Broker, caps: bytes) -> None:
    await broker.register_worker(DRAIN_WORKER, DRAIN_OFFER)
    await broker.claim(DRAIN_WORKER, caps)  # finds nothing: the worker idles


async def _handed_and_completed(broker: Broker, caps: bytes, i: int) -> None:
    """W3's Redis work: a submission handed to the idle worker, which completes it (its
    claim in the same call finds nothing and idles it again)."""
    await broker.submit(DRAIN_REQUEST)
    handed = await broker.wait_for_work(["floor"], 1.0, worker_id=DRAIN_WORKER)
    if not isinstance(handed, Claim):
        raise RuntimeError(f"the job was not handed to the idle worker: {handed}")
    await broker.complete_and_claim(DRAIN_WORKER, handed.job.id, handed.token, 1, caps)


def _drain(n: int) -> tuple[Setup, Step]:
    """One slot's drain: each completion claims the next job in the same call."""
    held: list[Claim] = []

    async def setup(broker: Broker, caps: bytes) -> None:
        held.clear()
        await broker.register_worker(DRAIN_WORKER, DRAIN_OFFER)
        await broker.submit_many([DRAIN_REQUEST] * (n + 1))
        first = await broker.claim(DRAIN_WORKER, caps)
        assert isinstance(first, Claim), first
        held.append(first)

    async def step(broker: Broker, caps: bytes, i: int) -> None:
        claim = held.pop()
        fence, nxt = await broker.complete_and_claim(
            DRAIN_WORKER, claim.job.id, claim.token, 1, caps
        )
        if fence != "ok" or not isinstance(nxt, Claim):
            raise RuntimeError(f"the drain stopped: {fence}, {nxt}")
        held.append(nxt)

    return setup, step


async def _claim_setup(broker: Broker, caps: bytes) -> None:
    requests = _requests(CLAIM_DEPTH, random.Random(CLAIM_DEPTH))
    for start in range(0, CLAIM_DEPTH, 1_000):
        await broker.submit_many(requests[start : start + 1_000])


async def _claim(broker: Broker, caps: bytes, i: int) -> None:
    """One claim by a worker holding nothing (a new id each time, so no worker's leases
    grow), with the scheduling policies a worker applies by default."""
    got = await broker.claim(f"bench-claimer-{i}", OFFER)
    if not isinstance(got, Claim):
        raise RuntimeError(f"the claim found nothing: {got}")


async def run(quick: bool) -> str:
    if shutil.which("valgrind") is None:
        return "instructions: skipped: valgrind is not installed (apt-get install valgrind)"
    n = 100 if quick else 400
    drain_setup, drain_step = _drain(n)
    claims = min(n, CLAIM_DEPTH // 100)
    rows: list[tuple[str, int, float]] = [
        ("submit, no worker idle", n, await _per_call(_busy_worker, _submit, n)),
        (
            "submit handed to an idle worker + its complete_and_claim (W3)",
            n,
            await _per_call(_idle_worker, _handed_and_completed, n),
        ),
        ("drain, 1 slot: complete_and_claim", n, await _per_call(drain_setup, drain_step, n)),
        (
            f"claim, {CLAIM_DEPTH:,} pending (1% match), default policies",
            claims,
            await _per_call(_claim_setup, _claim, claims, handoff=False),
        ),
    ]
    return table(
        "instructions: Redis instructions per script call (callgrind inside FCALL; "
        "deterministic, unlike the timings)",
        ["case", "calls", "instructions/call"],
        [[what, calls, f"{per / 1000:,.1f}k"] for what, calls, per in rows],
    )
