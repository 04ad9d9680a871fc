"""Side by side with other job queues: runs `../shared/bench-peers/run.sh` on this checkout.

bench-peers (a folder beside the checkout, not part of it; its README says what it measures)
runs this project and seven Python job queues (and BullMQ where Node.js is installed) on one
Redis, in one run, and prints a markdown table: W1 enqueue one at a time, W1b batched enqueue,
W2 drain with one worker process, W3 submit -> result visible (p50, p99). This benchmark
runs it and reduces that table to one row per measure: emp-redis, the best Python peer of
the run and their ratio (and BullMQ's best, in its own columns), the numbers issue 16's
targets compare. The whole bench-peers table follows, verbatim.

Where bench-peers lives: $EMP_BENCH_PEERS (a folder holding run.sh), else `shared/bench-peers`
beside the repository (for a git worktree, also beside its main checkout). Missing: the
benchmark answers one line saying so. Its options: $EMP_BENCH_PEERS_ARGS (default
`--reps 3`, or `--reps 1 --no-w0` with --quick), e.g. `--reps 1 --only emp,huey,dramatiq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from bench.common import table

ROOT: Final = Path(__file__).resolve().parent.parent
DIR_ENV: Final = "EMP_BENCH_PEERS"
ARGS_ENV: Final = "EMP_BENCH_PEERS_ARGS"
FULL_ARGS: Final = "--reps 3"
QUICK_ARGS: Final = "--reps 1 --no-w0"
# The line that separates this benchmark's own table from bench-peers' table, which
# bench/report.py copies into BENCHMARKS.md as markdown rather than as text.
RAW_HEADING: Final = "bench-peers table (run.py, verbatim):"
TITLE_PREFIX: Final = "peers: emp-redis vs the best Python peer"

EMP: Final = "emp-redis"
BULLMQ: Final = "bullmq"


# --- reading bench-peers' table ---------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One row of the reduced table: a bench-peers column, read from some of its rows."""

    label: str
    column: str  # the start of the bench-peers header cell
    better: Literal["higher", "lower"]
    emp_row: str  # which emp-redis row (its label contains this)


MEASURES: Final = (
    Measure("W1 enqueue one at a time, jobs/s", "W1 enqueue", "higher", "10 slots"),
    Measure("W1b batched enqueue, jobs/s", "W1b", "higher", "10 slots"),
    Measure("W2 drain, 10 slots, jobs/s", "W2 drain", "higher", "10 slots"),
    Measure("W2 drain, 1 slot, jobs/s", "W2 drain", "higher", "1 slot"),
    Measure("W3 submit -> result p50, ms", "W3 p50", "lower", "10 slots"),
    Measure("W3 submit -> result p99, ms", "W3 p99", "lower", "10 slots"),
)


@dataclass(frozen=True)
class PeerRow:
    label: str  # the first cell, e.g. "huey" or "emp-redis (this project, 10 slots)"
    cells: dict[str, str]  # header cell -> cell

    @property
    def kind(self) -> Literal["emp", "bullmq", "python"]:
        name = self.label.lower()
        if name.startswith(EMP):
            return "emp"
        return "bullmq" if name.startswith(BULLMQ) else "python"

    @property
    def short_name(self) -> str:
        """The library's name without the settings in parentheses: 'dramatiq'."""
        return self.label.split(" (", 1)[0].strip()

    def value(self, column: str) -> float | None:
        """The median of the cell whose header starts with `column`: cells read 'median
        (min-max)', a bare number, or a word ('FAILED', '(same as above)', '—')."""
        for header, cell in self.cells.items():
            if header.startswith(column):
                match = re.match(r"\s*([\d,]+(?:\.\d+)?)", cell)
                return float(match[1].replace(",", "")) if match else None
        return None


def parse_peer_table(markdown: str) -> list[PeerRow]:
    """The rows of bench-peers' W1-W3 table, the one whose header starts with '| peer |'
    (the W0 table, notes and the settings list around it are skipped)."""
    rows: list[PeerRow] = []
    header: list[str] | None = None
    for line in markdown.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            if rows:
                break  # the table ended
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        if cells[0].lower() == "peer":
            header, rows = cells, []
        elif header is not None and cells[0] and not set("".join(cells)) <= set("-: "):
            rows.append(PeerRow(cells[0], dict(zip(header[1:], cells[1:], strict=False))))
    return rows


@dataclass(frozen=True)
class Comparison:
    measure: Measure
    emp: float | None
    best_python: tuple[str, float] | None
    best_bullmq: float | None

    def ratio(self, other: float | None) -> float | None:
        """emp-redis / other (> 1 is ahead for jobs/s, < 1 is ahead for ms)."""
        if self.emp is None or not other:
            return None
        return self.emp / other

    @property
    def python_ratio(self) -> float | None:
        return self.ratio(self.best_python[1] if self.best_python else None)

    @property
    def bullmq_ratio(self) -> float | None:
        return self.ratio(self.best_bullmq)


def _best(values: Sequence[tuple[str, float]], better: str) -> tuple[str, float] | None:
    if not values:
        return None
    pick = max if better == "higher" else min
    return pick(values, key=lambda item: item[1])


def compare(rows: Sequence[PeerRow]) -> list[Comparison]:
    """For each measure: emp-redis's value, the best Python peer's and BullMQ's best."""
    out = []
    for m in MEASURES:
        emp = next(
            (r.value(m.column) for r in rows if r.kind == "emp" and m.emp_row in r.label), None
        )
        python = [
            (r.short_name, v)
            for r in rows
            if r.kind == "python" and (v := r.value(m.column)) is not None
        ]
        bullmq = [
            (r.short_name, v)
            for r in rows
            if r.kind == "bullmq" and (v := r.value(m.column)) is not None
        ]
        best_bullmq = _best(bullmq, m.better)
        out.append(
            Comparison(m, emp, _best(python, m.better), best_bullmq[1] if best_bullmq else None)
        )
    return out


def reduced_table(comparisons: Sequence[Comparison], args: str) -> str:
    """This benchmark's own table: one row per measure (bench.common.table format, so
    bench/report.py reads it back like every other table)."""
    with_bullmq = any(c.best_bullmq is not None for c in comparisons)
    header = ["measure", "emp-redis", "best Python peer", "peer value", "ratio"]
    if with_bullmq:
        header += ["BullMQ", "ratio vs BullMQ"]
    rows: list[list[object]] = []
    for c in comparisons:
        row: list[object] = [
            c.measure.label,
            _cell(c.emp),
            c.best_python[0] if c.best_python else "n/a",
            _cell(c.best_python[1] if c.best_python else None),
            _ratio(c.python_ratio),
        ]
        if with_bullmq:
            row += [_cell(c.best_bullmq), _ratio(c.bullmq_ratio)]
        rows.append(row)
    title = (
        f"{TITLE_PREFIX} per row (bench-peers {args}; medians; ratio = emp-redis / peer: "
        "above 1 is ahead for jobs/s, below 1 is ahead for ms)"
    )
    return table(title, header, rows)


def _cell(value: float | None) -> object:
    return "n/a" if value is None else value


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --- running it --------------------------------------------------------------------------------


def peers_dir() -> Path | None:
    """The bench-peers folder: $EMP_BENCH_PEERS, else beside the checkout (or beside the main
    checkout of this git worktree); None when none holds run.sh."""
    configured = os.environ.get(DIR_ENV)
    if configured:
        candidates = [Path(configured)]
    else:
        candidates = [ROOT.parent / "shared" / "bench-peers"]
        main = _main_checkout()
        if main is not None and main != ROOT:
            candidates.append(main.parent / "shared" / "bench-peers")
    return next((c for c in candidates if (c / "run.sh").is_file()), None)


def _main_checkout() -> Path | None:
    """The main working tree of the repository this checkout belongs to (itself, unless it is
    a `git worktree`)."""
    try:
        common = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(common).parent if common else None


def peer_args(quick: bool) -> str:
    return os.environ.get(ARGS_ENV) or (QUICK_ARGS if quick else FULL_ARGS)


async def _run_sh(folder: Path, args: str, table_out: Path) -> tuple[int, str]:
    """run.sh with `args`, from this checkout; its output. Cancelled (the `all` time limit),
    it stops the whole process group it started."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(folder / "run.sh"),
        *shlex.split(args),
        "--table-out",
        str(table_out),
        cwd=ROOT,
        env={**os.environ, "EMP_CHECKOUT": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await asyncio.wait_for(process.wait(), 10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode or 0, output.decode(errors="replace")


def render(raw_table: str, args: str) -> str:
    """The benchmark's text: the reduced table, then bench-peers' own table."""
    comparisons = compare(parse_peer_table(raw_table))
    return f"{reduced_table(comparisons, args)}\n\n{RAW_HEADING}\n\n{raw_table.strip()}\n"


async def run(quick: bool) -> str:
    folder = peers_dir()
    if folder is None:
        where = os.environ.get(DIR_ENV) or str(ROOT.parent / "shared" / "bench-peers")
        return f"peers: skipped: no bench-peers run.sh in {where} (set {DIR_ENV} to its folder)"
    args = peer_args(quick)
    with tempfile.TemporaryDirectory(prefix="emp-bench-peers-") as tmp:
        table_out = Path(tmp) / "table.md"
        code, output = await _run_sh(folder, args, table_out)
        if code != 0 or not table_out.is_file():
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise RuntimeError(f"bench-peers run.sh {args} exited {code}:\n{tail}")
        return render(table_out.read_text(encoding="utf-8"), args)
