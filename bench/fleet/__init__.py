"""`python -m bench fleet`: the scheduling policies (issue 13) proven on a replayed trace.

A real arrival trace (bench/traces/) is submitted at its compressed arrival times to a fresh
private Redis through the real Broker, and a simulated fleet of about 200 GPU workers in a
few processes claims from it with real claim calls, once per policy set: baseline (strict
order), affinity, fit, fair and all three. One module per idea:

- trace.py: the trace and how each row becomes a job (model, customer, priority, memory);
- gpu.py: the simulated GPU (memory, warm models in an LRU, cold loads, job time);
- fleet.py: the cards and model sets of the fleet;
- workers.py: the worker loops (claim, run, complete, block on the wake-up);
- replay.py: one run against a fresh Redis, with Redis's own time per claim;
- policies.py: the policy sets and the settings each run is made with;
- metrics.py: waits, cold loads, memory held idle, Jain's index, extra delay, throughput;
- table.py, plot.py: the printed tables with the targets, and the wait-CDF PNG;
- compare.py: all runs of one invocation, and docs/bench-fleet.md.
"""

from __future__ import annotations

from bench.fleet.compare import run_fleet


async def run(quick: bool) -> str:
    return await run_fleet(quick)
