"""`python -m bench fleet`: the same trace and fleet once per policy set, one fresh Redis
each, then the tables, the targets, the wait-CDF plot and docs/bench-fleet.md."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import median
from bench.fleet.fleet import build_fleet, describe_fleet, unrunnable
from bench.fleet.gpu import COLD_LOAD_S_PER_GB
from bench.fleet.metrics import measure, wait_s
from bench.fleet.plot import wait_cdf_png
from bench.fleet.policies import (
    BOUNDS_S,
    HALF_LIFE_S,
    IDLE_POLL_S,
    RUNS,
    bounds_s,
    broker_settings,
    prepare_run,
)
from bench.fleet.replay import replay
from bench.fleet.table import (
    PolicyResult,
    policy_table,
    priority_table,
    target_checks,
    targets_table,
    why_missed,
)
from bench.fleet.trace import TraceJob, customer_weights, describe_mapping, load_trace
from shared.scheduling.policies import AFFINITY, FIT
from shared.settings import BrokerSettings

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
PLOT_NAME = "bench-fleet-wait-cdf.png"
DEFAULTS = BrokerSettings()


@dataclass(frozen=True)
class Config:
    """A replay's size. `window`: the trace seconds replayed; `every`: keep every n-th row
    (with fewer workers, the same load per worker)."""

    workers: int
    processes: int
    factor: float
    window: tuple[float, float] | None = None
    every: int = 1
    rows: int | None = None
    runs: tuple[str, ...] = tuple(RUNS)


FULL = Config(workers=200, processes=4, factor=60.0)
# The ten minutes around the heavy customer's burst, every other row, half the fleet.
QUICK = Config(workers=100, processes=2, factor=60.0, window=(600.0, 1200.0), every=2)


def select(jobs: Sequence[TraceJob], config: Config) -> list[TraceJob]:
    picked = list(jobs)
    if config.window is not None:
        lo, hi = config.window
        picked = [j for j in picked if lo <= j.arrival_s < hi]
    return picked[:: config.every]


@dataclass(frozen=True)
class Comparison:
    text: str
    results: list[PolicyResult]
    waits: dict[str, list[float]]
    finished_once: dict[str, bool]  # per run: every job completed exactly once


async def compare(config: Config) -> Comparison:
    jobs = select(load_trace(limit=config.rows), config)
    by_row = {j.row: j for j in jobs}
    fleet = build_fleet(config.workers)
    if stuck := unrunnable(fleet, jobs):
        raise ValueError(f"no worker of the fleet can run {stuck[0]} ({len(stuck)} jobs)")
    results: list[PolicyResult] = []
    waits: dict[str, list[float]] = {}
    finished_once: dict[str, bool] = {}
    baseline_waits: dict[int, float] = {}
    lines = [*describe_mapping(jobs), describe_fleet(fleet)]
    for name in config.runs:
        policies = RUNS[name]
        settings = broker_settings(policies, config.factor)
        if settings is None:
            results.append(PolicyResult(name, None))
            continue
        started = time.perf_counter()
        run = await replay(
            jobs,
            fleet,
            settings,
            factor=config.factor,
            processes=config.processes,
            prepare=prepare_run(policies),
        )
        seconds = time.perf_counter() - started
        rows = [r.row for r in run.records]
        finished_once[name] = sorted(rows) == sorted(by_row) and all(
            r.fence == "ok" for r in run.records
        )
        metrics = measure(
            run.records,
            by_row,
            factor=config.factor,
            started_s=run.started_s,
            workers=len(fleet),
            claim_usec=run.claim_usec,
            weights=customer_weights(),
            baseline_waits=baseline_waits,
            held=run.held,
        )
        if name == "baseline":
            baseline_waits = {r.row: wait_s(r, config.factor) for r in run.records}
        waits[name] = [wait_s(r, config.factor) for r in run.records]
        results.append(PolicyResult(name, metrics, bounds_s(policies)))
        lines.append(f"run {name}: {seconds:.0f} s wall, {metrics.claims:,} claims logged")
    span = (jobs[-1].arrival_s - jobs[0].arrival_s) if jobs else 0.0
    median_work = median([j.work_s for j in jobs])
    lines += [
        f"time compression: {config.factor:g}x (trace {span:,.0f} s replayed in "
        f"{span / config.factor:,.0f} s); waits, work and bounds below are trace seconds",
        f"cold load: {COLD_LOAD_S_PER_GB:g} s per GB of the model (a 14 GB model: "
        f"{14 * COLD_LOAD_S_PER_GB:g} s; the median job: {median_work:.1f} s); idle poll "
        f"{IDLE_POLL_S:g} s wall",
        f"policy settings (trace seconds; the broker gets them divided by the compression): "
        f"AFFINITY_MAX_DELAY_SECONDS {BOUNDS_S[AFFINITY]:g}, FIT_MAX_DELAY_SECONDS "
        f"{BOUNDS_S[FIT]:g}, FAIR_SHARE_HALF_LIFE_SECONDS {HALF_LIFE_S:g}; "
        f"AFFINITY_PRIORITY_WINDOW {DEFAULTS.affinity_window}, scheduling_scan_classes "
        f"{DEFAULTS.scheduling_scan_classes} (the defaults)",
    ]
    title = (
        f"fleet: {len(jobs):,} trace rows on {len(fleet)} simulated workers, per policy "
        f"(waits, extra delay and bounds in trace seconds, {config.factor:g}x compressed)"
    )
    by_name = {r.name: r for r in results}
    checks = target_checks(by_name, IDLE_POLL_S * config.factor)
    text = "\n".join(
        [
            *lines,
            "",
            policy_table(results, title),
            "",
            priority_table(results),
            "",
            targets_table(checks),
            "",
            *why_missed(checks, by_name),
        ]
    )
    return Comparison(text, results, waits, finished_once)


def write_docs(comparison: Comparison, docs: Path, command: str, quick: bool) -> Path:
    """docs/bench-fleet.md and the wait-CDF PNG beside it; returns the PNG's path."""
    plot = docs / PLOT_NAME
    wait_cdf_png(comparison.waits, plot, "Queue wait CDF per scheduling policy (trace seconds)")
    mode = "quick: ten minutes around the burst, every other row, 100 workers" if quick else "full"
    (docs / "bench-fleet.md").write_text(
        DOC_TEMPLATE.format(command=command, mode=mode, text=comparison.text, plot=PLOT_NAME),
        encoding="utf-8",
    )
    return plot


DOC_TEMPLATE = """\
# Fleet benchmark: scheduling policies on a replayed trace

Generated by `{command}` ({mode}); do not edit by hand, run it again.

A real arrival trace (bench/traces/README.md: the Azure LLM inference trace 2023, CC-BY 4.0)
replayed against the real broker: a private Redis, the real Lua scripts, real claim calls
from about 200 simulated workers in a few processes. Each simulated worker has a GPU with
memory, an LRU of warm models, a cold-load time and a job duration (bench/fleet/). The same
trace and fleet run once per policy set (`SCHEDULING_POLICIES`): baseline (none: strict
priority, then FIFO), affinity, fit, fair, and all three.

## How to run

    python -m bench fleet            # about 5 runs of a minute each
    python -m bench fleet --quick    # ten trace minutes, half the fleet (bench all --quick)

## Columns

- wait: time from submission to claim, in trace seconds (the measured time times the
  compression factor), overall and per priority.
- cold loads/1000: jobs that found their model cold on the worker that took them.
- idle GB*s: GPU memory held but not needed (the card's memory minus the job's need) times
  the time the job held it (cold load and work), trace seconds.
- Jain in burst: Jain's index of the customers' served work against their weighted fair
  share (water-filling over their demand) during the heavy customer's burst, within each
  priority band (fair share divides a band), averaged over the bands by the work each
  served; 1 is perfectly fair (bench/fleet/metrics.py).
- held jobs: jobs a bounded policy (affinity, fit) passed over while strict order would
  have taken them next; each one's 'claimed' event carries `held_ms` (from that first
  pass-over, `held_since`, to the claim) and `passed_over_ms` (to the last pass-over).
- worst passed over: the longest `passed_over_ms`, the measure of the issue's bound ("a
  job passed over for affinity is never passed over once it has waited
  AFFINITY_MAX_DELAY_SECONDS longer than strict order would have made it wait").
  bound: the largest bound of the run's bounded policies (AFFINITY_MAX_DELAY_SECONDS,
  FIT_MAX_DELAY_SECONDS, set to their trace-time values divided by the compression; a job
  held by both has the earlier deadline).
- worst held to claim: the longest `held_ms`; past the bound no claim passes the job over,
  but the next claim able to run it may come up to an idle worker's poll later (the
  target allows the bound plus that slack), or later still when every such worker is busy.
- end-to-end extra (info): the largest increase of any row's wait against the baseline
  run; "others" leaves out the heavy customer's rows (fair share delays those on purpose,
  unbounded). A different schedule changes every later wait too (other jobs queue behind
  different ones, cold loads differ), so this is not what a policy held a job back and no
  bound limits it: information only.
- jobs/s: jobs over the wall time from the first arrival to the last completion; util %:
  busy GPU time (cold loads and work) over the fleet's time in the same span.
- redis us/claim: Redis's own time per claim call (the slow log, threshold 0), no network.

## Results

```text
{text}
```

![Queue wait CDF per policy]({plot})
"""


async def run_fleet(quick: bool, docs: Path = DOCS) -> str:
    config = QUICK if quick else FULL
    comparison = await compare(config)
    command = "python -m bench fleet" + (" --quick" if quick else "")
    plot = write_docs(comparison, docs, command, quick)
    return f"{comparison.text}\n\nwrote {docs / 'bench-fleet.md'} and {plot}"
