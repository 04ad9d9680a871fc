"""`python -m bench <name> [--quick]`: run one benchmark and print its table.

`python -m bench all [--quick]` runs every benchmark, prints each table and then one summary
against the targets (docs/ARCHITECTURE.md#performance-targets), and writes BENCHMARKS.md
(or `--output`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
LIMIT_QUICK_S = 300.0  # per benchmark with `all`: each takes well under a minute quick
LIMIT_FULL_S = 1800.0
BENCHMARKS = {
    "claim": "claim cost vs queue depth (1% of pending jobs match the worker)",
    "broker": "broker API: submit rate, drain throughput, submit-to-result round trip",
    "worker": "worker: wake-up latency, drain throughput, idle fleet Redis load",
    "hub": "hub POST /jobs submissions/s and latency",
    "pyz": "worker.pyz: size, start-to-registered time, idle memory",
    "webhooks": "webhook deliveries/s through 1 and 2 hubs, event-to-delivery latency",
    "scale": "Redis load of 3 pools over a 3-primary cluster vs 1 pool on one Redis",
    "outputs": "output store: MB/s and time per job to store a 2 MB PNG (moto on loopback)",
    "peers": "side by side with seven Python job queues and BullMQ (../shared/bench-peers)",
    "fleet": "scheduling policies on a replayed arrival trace, a simulated fleet, the real broker",
    "floor": "what one Redis round trip costs from each client stack (the floor under `peers`)",
    "instructions": "Redis instructions per hot-path script call, counted under callgrind",
    "worker_instructions": "the worker process's instructions per job, counted under callgrind",
}
# bench-peers builds its venvs on a first run and takes 15-25 minutes with 3 repetitions.
LIMIT_PEERS_S = 2400.0
PEERS_SKIPPED_QUICK = (
    "peers: skipped: not part of `all --quick` unless --peers is given "
    "(bench-peers takes minutes even with --reps 1)"
)


def _run(name: str, quick: bool, limit: float | None = None) -> str:
    """One benchmark's table; with `limit`, TimeoutError after that many seconds (its context
    managers still stop the processes and the Redis it started)."""
    module = importlib.import_module(f"bench.{name}")
    run = cast(Callable[[bool], Coroutine[Any, Any, str]], module.run)
    return asyncio.run(asyncio.wait_for(run(quick), limit))


def run_all(quick: bool, output: Path, command: str, limit: float, *, peers: bool = False) -> int:
    """Every benchmark (one that fails or hangs past `limit` seconds is reported, the others
    still run), the summary, and the report file. `peers` (bench-peers, minutes long) runs
    in a full run, and in a quick one only when `peers` is set. Exit status 1 when a
    benchmark failed; missed targets are not errors."""
    from bench.common import machine, measure_machine_speed
    from bench.report import Outcome, markdown, summarize, summary_table

    speed = measure_machine_speed()
    print(f"machine speed: {speed}", flush=True)
    outcomes = []
    for name in BENCHMARKS:
        started = time.perf_counter()
        text: str | None = None
        error: str | None = None
        try:
            if name == "peers" and quick and not peers:
                text = PEERS_SKIPPED_QUICK
            else:
                text = _run(name, quick, max(limit, LIMIT_PEERS_S) if name == "peers" else limit)
        except TimeoutError:
            error = f"TimeoutError: did not finish within {limit:g} s (stopped; a hang?)"
        except Exception as exc:  # one broken benchmark must not lose every other number
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        print(text if text is not None else f"{name}: FAILED after {seconds:.0f} s: {error}")
        print(flush=True)
        outcomes.append(Outcome(name, text, error, seconds))
    lines = summarize({o.name: o.text for o in outcomes if o.text is not None})
    print(summary_table(lines, quick), flush=True)
    report = markdown(
        outcomes,
        lines,
        command=command,
        machine=machine(),
        speed=speed,
        when=datetime.now(UTC),
        quick=quick,
    )
    output.write_text(report, encoding="utf-8")
    print(f"\nwrote {output}")
    return 1 if any(o.error is not None for o in outcomes) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a short run")
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "BENCHMARKS.md",
        help="where `all` writes its report (default: BENCHMARKS.md in the repository)",
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="with `all`: stop a benchmark that runs longer than this many seconds and "
        f"report it as failed (default: {LIMIT_QUICK_S:g} with --quick, else {LIMIT_FULL_S:g})",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="with `all --quick`: run the peers benchmark too (a full `all` always runs it); "
        "its options: $EMP_BENCH_PEERS_ARGS, e.g. '--reps 1 --only emp,huey,dramatiq --no-w0'",
    )
    args = parser.parse_args(argv)
    if args.name == "all":
        limit = args.limit or (LIMIT_QUICK_S if args.quick else LIMIT_FULL_S)
        command = " ".join(["python -m bench", *argv])
        return run_all(args.quick, args.output, command, limit, peers=args.peers)
    print(_run(args.name, args.quick), flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
