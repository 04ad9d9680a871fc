"""A connector that pretends to work: for tests, demos and throughput benchmarks.

It is deterministic (no randomness, no clock-dependent output) so end-to-end tests can assert
exact results, progress sequences and failure modes. `step_ms=0` never sleeps, so a fleet of
simulation workers measures the broker's overhead rather than the simulated work.

Payload (every field optional):
  steps          int, default 5: progress reports, one per step
  step_ms        number, default 200: milliseconds per step
  fail           str: fail with this message after the steps (or at `fail_at_step`)
  fail_retryable bool, default true
  fail_at_step   int: fail at the start of this step (1-based) instead of after the last one
  result         any JSON: echoed back in the result
  models         list of model names: the models the job "loads"; once it ran they are warm
                 on this worker (SIMULATION_WARM_MODELS of them, the latest first), and at
                 submission they are the job's preferred models (shared/model_refs.py)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared.model_refs import listed_models
from shared.setting import integer
from shared.setting_section import Section
from worker.connectors.base import Connector, JobCancelled, JobContext, JobFailed, ProgressFn
from worker.connectors.setting_kinds import service_name
from worker.connectors.util import (
    bad_payload,
    payload_bool,
    payload_int,
    payload_number,
    wait_cancelled,
)
from worker.connectors.warm import WarmModels

MAX_STEPS: Final = 1_000_000
MAX_STEP_MS: Final = 3_600_000.0
# With step_ms=0 nothing awaits between steps except progress(); yield to the event loop now
# and then so a long instant job cannot starve heartbeats. A yield is not a sleep: it costs
# microseconds, so the benchmark still measures the broker.
YIELD_EVERY: Final = 256

SIMULATION = Section("simulation connector (SERVICES=simulation)")
SIMULATION_SERVICE_NAME = SIMULATION.add(
    service_name(
        "SIMULATION_SERVICE_NAME",
        "simulation",
        doc="Service name the simulation connector registers as",
    )
)
SIMULATION_WARM_MODELS = SIMULATION.add(
    integer(
        "SIMULATION_WARM_MODELS",
        8,
        lo=0,
        hi=4096,
        doc="Models of the latest jobs' payloads reported warm (loaded), most recent first",
    )
)


class SimulationConnector(Connector):
    name = "simulation"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        values = env or {}
        self.name = SIMULATION_SERVICE_NAME.read(values)
        self._warm = WarmModels(SIMULATION_WARM_MODELS.read(values))

    def warm_models(self) -> Sequence[str]:
        return self._warm.names()

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        payload = job.payload
        steps = payload_int(payload, "steps", 5, lo=0, hi=MAX_STEPS)
        step_seconds = payload_number(payload, "step_ms", 200, lo=0, hi=MAX_STEP_MS) / 1000
        fail = payload.get("fail")
        if fail is not None and not isinstance(fail, str):
            raise bad_payload("fail", f"expected a string, got {type(fail).__name__}")
        retryable = payload_bool(payload, "fail_retryable", True)
        fail_at = payload_int(payload, "fail_at_step", 0, lo=0, hi=MAX_STEPS)

        for step in range(1, steps + 1):
            if cancel.is_set():
                raise JobCancelled(f"cancelled before step {step}/{steps}")
            if fail is not None and step == fail_at:
                raise JobFailed(fail, retryable=retryable, details={"step": step})
            if step_seconds > 0:
                if await wait_cancelled(cancel, step_seconds):
                    raise JobCancelled(f"cancelled during step {step}/{steps}")
            elif step % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            await progress(step / steps * 100, f"step {step}/{steps}")

        if cancel.is_set():
            raise JobCancelled("cancelled after the last step")
        # Loaded by the steps, whatever their outcome below: the next job may use them warm.
        self._warm.used(listed_models(payload))
        if fail is not None:
            raise JobFailed(fail, retryable=retryable, details={"step": steps})
        return {"steps": steps, "result": payload.get("result"), "worker_service": self.name}
