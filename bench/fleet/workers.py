"""The worker loops: many simulated workers per process, each a real broker client.

Each loop does what worker/runtime.py does with one slot: claim with its capability
document (its warm models read from its simulated GPU at that moment), run the job
(sleep its cold load and its work, compressed), complete it, claim again; with nothing to
claim, block on the broker's wake-up (BLPOP on the service doorbells and its own,
`wait_for_work`) for at most IDLE_POLL_SECONDS or until the next due time the claim named,
as a real worker does, and pass its hop count to the next claim.
Nothing polls faster than a real worker would.

A process runs its loops until the parent sets `stop`, then writes one `JobRecord` per job
it ran to `out_path` (JSON), which the parent merges.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import orjson

from bench.common import bench_client
from bench.fleet.fleet import CardSpec
from bench.fleet.gpu import SimulatedGpu
from bench.fleet.trace import MODEL_BY_NAME
from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.settings import BrokerSettings
from shared.validation import convert


@dataclass(frozen=True)
class JobRecord:
    """One job as a simulated worker ran it. Times: Redis ms (created, claimed) and this
    machine's epoch seconds (finished); durations in trace seconds."""

    row: int
    worker_id: str
    memory_gb: float  # the card's
    created_ms: int
    claimed_ms: int
    finished_s: float
    cold: bool
    cold_load_s: float
    work_s: float
    idle_gb: float
    fence: str


async def _worker_loop(
    spec: CardSpec, broker: Broker, factor: float, records: list[JobRecord]
) -> None:
    sizes = {name: model.size_gb for name, model in MODEL_BY_NAME.items()}
    gpu = SimulatedGpu(spec.memory_gb, sizes, spec.warm)
    register_caps = convert(spec.capabilities(gpu.warm_models), Capabilities)
    await broker.register_worker(spec.worker_id, register_caps)
    idle_poll = broker.settings.idle_poll
    hops = 0
    while True:
        caps = orjson.dumps(spec.capabilities(gpu.warm_models))
        result = await broker.claim(spec.worker_id, caps, hops=hops)
        hops = 0
        if not isinstance(result, Claim):
            # As worker/runtime.py: wake for a held job's deadline (fit) if sooner, and on
            # this worker's own doorbell too (fit wakes the idle worker it leaves a job to).
            timeout = idle_poll
            if result.next_due_ms is not None:
                timeout = max(0.01, min(timeout, result.next_due_ms / 1000 - time.time()))
            woken = await broker.wait_for_work(spec.services, timeout, worker_id=spec.worker_id)
            hops = woken if isinstance(woken, int) else 0  # its claims accept no handoff
            continue
        job = result.job
        payload: dict[str, Any] = job.payload
        run = gpu.run(str(payload["model"]), float(payload["work_s"]), float(payload["memory_gb"]))
        await asyncio.sleep(run.busy_s / factor)
        fence = await broker.complete(spec.worker_id, job.id, result.token, None)
        records.append(
            JobRecord(
                row=int(payload["row"]),
                worker_id=spec.worker_id,
                memory_gb=spec.memory_gb,
                created_ms=job.created_at,
                claimed_ms=job.claimed_at or job.created_at,
                finished_s=time.time(),
                cold=run.cold,
                cold_load_s=run.cold_load_s,
                work_s=run.work_s,
                idle_gb=run.idle_gb,
                fence=fence,
            )
        )


async def _run_loops(
    url: str, specs: list[CardSpec], settings: BrokerSettings, factor: float, stop: Event
) -> list[JobRecord]:
    # One connection per loop for its blocking wait, and room for the claims besides.
    client = bench_client(url)
    broker = Broker(client, settings)
    records: list[JobRecord] = []
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def set_stopped() -> None:
        if not stopped.done():
            stopped.set_result(None)

    def wait_for_stop() -> None:
        stop.wait()
        loop.call_soon_threadsafe(set_stopped)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    tasks = [asyncio.create_task(_worker_loop(s, broker, factor, records)) for s in specs]
    try:
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task in done:
                task.result()  # a loop that ended on its own failed: raise its error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    return records


def worker_process(
    url: str,
    specs: list[CardSpec],
    settings: BrokerSettings,
    factor: float,
    stop: Event,
    out_path: Path,
) -> None:
    """A process's entry point (multiprocessing, spawn)."""
    records = asyncio.run(_run_loops(url, specs, settings, factor, stop))
    out_path.write_bytes(orjson.dumps([asdict(r) for r in records]))


def read_records(path: Path) -> list[JobRecord]:
    return [JobRecord(**raw) for raw in orjson.loads(path.read_bytes())]
