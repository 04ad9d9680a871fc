"""`python -m bench <name> [--quick]`: run one benchmark (or `all`) and print its table."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

BENCHMARKS = {
    "claim": "claim cost vs queue depth (1% of pending jobs match the worker)",
    "broker": "broker API: submit rate, drain throughput, submit-to-result round trip",
    "worker": "worker: wake-up latency, drain throughput, idle fleet Redis load",
    "hub": "hub POST /jobs submissions/s and latency",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a short run")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        run = cast(Callable[[bool], Coroutine[Any, Any, str]], module.run)
        print(asyncio.run(run(args.quick)), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
