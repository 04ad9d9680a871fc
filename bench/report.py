"""The summary of `python -m bench all`: numbers read back from each benchmark's table, held
against the targets (docs/ARCHITECTURE.md#performance-targets), and BENCHMARKS.md.

The benchmarks return printed tables (bench.common.table), so the numbers are parsed out of
that text: columns are located from the dashed line under the header, rows are found by their
(stable) labels in the first column. A row that is missing, unparsable or `nan`, or a benchmark
that failed, shows as "n/a" in the summary; nothing here raises on odd input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from bench.common import fmt, table
from bench.peers import RAW_HEADING

Status = Literal["met", "MISSED", "n/a", "—"]
NA: Final = "n/a"
NO_TARGET: Final = "—"


# --- parsing the tables -----------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """One table as bench.common.table prints it: title, header cells and row cells."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, name: str) -> int | None:
        return self.header.index(name) if name in self.header else None


def _is_underline(line: str, above: str) -> bool:
    return bool(above.strip()) and line == "-" * len(above)


def parse_tables(text: str) -> list[Table]:
    """Every table in `text`: a title, a line of dashes as long as the title, the header, a
    line of dash runs (one per column: their positions give the columns), then rows up to
    the next blank line or table."""
    lines = text.splitlines()
    tables = []
    i = 0
    while i + 3 < len(lines):
        title, underline, header, rule = lines[i : i + 4]
        if not (_is_underline(underline, title) and re.fullmatch(r"-+( +-+)*", rule)):
            i += 1
            continue
        spans = [m.span() for m in re.finditer(r"-+", rule)]

        def cells(line: str, spans: Sequence[tuple[int, int]] = spans) -> tuple[str, ...]:
            return tuple(line[a:b].strip() for a, b in spans)

        rows = []
        j = i + 4
        while j < len(lines) and lines[j].strip():
            if j + 1 < len(lines) and _is_underline(lines[j + 1], lines[j]):
                break  # the next table's title
            rows.append(cells(lines[j]))
            j += 1
        tables.append(Table(title, cells(header), tuple(rows)))
        i = j
    return tables


def number(cell: str) -> float | None:
    """A printed number ('12,345', '0.812', '1e-05') or None ('', 'nan', text)."""
    try:
        value = float(cell.replace(",", "").strip())
    except ValueError:
        return None
    return None if math.isnan(value) or math.isinf(value) else value


Found = list[tuple[Table, tuple[str, ...]]]


def _rows(tables: Iterable[Table], match: Callable[[str], bool]) -> Found:
    return [(t, row) for t in tables for row in t.rows if row and match(row[0])]


def _cell(t: Table, row: tuple[str, ...], column: str) -> float | None:
    index = t.column(column)
    if index is None or index >= len(row):
        return None
    return number(row[index])


def value_of(tables: Iterable[Table], label: str, column: str = "value") -> float | None:
    """The number in `column` of the first row labelled exactly `label`."""
    for t, row in _rows(tables, lambda first: first == label):
        return _cell(t, row, column)
    return None


def best_of(
    tables: Iterable[Table], prefix: str, column: str = "value"
) -> tuple[str, float] | None:
    """The row starting with `prefix` with the highest number in `column`: (label, number)."""
    found = [
        (row[0], v)
        for t, row in _rows(tables, lambda first: first.startswith(prefix))
        if (v := _cell(t, row, column)) is not None
    ]
    return max(found, key=lambda item: item[1]) if found else None


def first_with(tables: Iterable[Table], prefix: str, column: str = "value") -> float | None:
    """The number in `column` of the first row whose label starts with `prefix`."""
    for t, row in _rows(tables, lambda first: first.startswith(prefix)):
        return _cell(t, row, column)
    return None


# --- targets and the summary ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """`op limit`, e.g. < 2 (ms): the measured value must be below/above `limit` (strictly,
    except with <= and >=)."""

    op: Literal["<", ">", "<=", ">="]
    limit: float
    text: str

    def met(self, value: float) -> bool:
        if self.op == "<":
            return value < self.limit
        if self.op == ">":
            return value > self.limit
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Line:
    """One summary row. Without a target it is shown for information (`note` says why)."""

    what: str
    value: float | None
    unit: str
    target: Target | None
    note: str = ""
    source: str = ""  # the benchmark it comes from
    missing: str = ""  # why the value may be absent, when the benchmark ran

    @property
    def status(self) -> Status:
        if self.target is None:
            return NO_TARGET
        if self.value is None:
            return NA
        return "met" if self.target.met(self.value) else "MISSED"

    @property
    def target_text(self) -> str:
        return self.target.text if self.target else (self.note or NO_TARGET)

    @property
    def measured(self) -> str:
        return NA if self.value is None else fmt(self.value)


CLAIM_P99 = Target("<", 2.0, "< 2 ms")
CLAIM_REDIS = Target("<=", 60.0, "<= 60 us")
DRAIN = Target(">", 4700.0, "> 4,700 jobs/s")
RESULT_P50 = Target("<", 0.75, "< 0.75 ms")
RESULT_P99 = Target("<", 2.0, "< 2 ms")
SUBMIT_ONE = Target(">", 10_000.0, "> 10,000 jobs/s")
SUBMIT_BATCHED = Target(">", 30_000.0, "> 30,000 jobs/s")
HUB = Target(">", 3000.0, "> 3,000 subm/s")
IDLE_FLEET = Target("<", 1000.0, "< 1,000 cmd/s")
PYZ_SIZE = Target("<", 20.0, "< 20 MB")
START = Target("<", 2.0, "< 2 s")
RSS = Target("<", 80e6 / 2**20, "< 80 MB (76.3 MiB)")
EVEN_SPLIT = Target("<", 15.0, "< 15 % off an even share")
FLEET_SIZE = 1000
CLAIM_DEPTHS = (100_000, 1_000_000)  # the depths the targets name
CLAIM_REDIS_DEPTH = 100_000  # the depth of the target for Redis's time per claim


def _claim(tables: list[Table]) -> list[Line]:
    """p99 claim at each depth the targets name (n/a where this run did not measure it, as a
    quick run does not measure 1,000,000), and at the largest depth measured if it is neither;
    then Redis's time per claim at 100,000 pending, beside the least claim's on the same data
    (bench/lua/claim_floor.lua), the floor that target is set against."""
    measured: dict[int, float | None] = {}
    redis_us: dict[int, tuple[float | None, float | None]] = {}
    for t in tables:
        for row in t.rows:
            depth = _cell(t, row, "pending")
            if depth is not None:
                measured[int(depth)] = _cell(t, row, "p99 ms")
                redis_us[int(depth)] = (
                    _cell(t, row, "redis p50 us"),
                    _cell(t, row, "floor p50 us"),
                )
    depths = sorted({*CLAIM_DEPTHS, *sorted(measured)[-1:]})
    depth_list = ", ".join(f"{d:,}" for d in sorted(measured))
    missing = f"this run measured {depth_list} pending" if measured else ""
    claim, floor = redis_us.get(CLAIM_REDIS_DEPTH, (None, None))
    return [
        *(
            Line(
                f"claim p99, {d:,} pending (1% match)",
                measured.get(d),
                "ms",
                CLAIM_P99,
                source="claim",
                missing=missing,
            )
            for d in depths
        ),
        Line(
            f"claim, Redis time p50, {CLAIM_REDIS_DEPTH:,} pending",
            claim,
            "us",
            CLAIM_REDIS,
            source="claim",
            missing=missing,
        ),
        Line(
            f"least claim (floor), Redis time p50, {CLAIM_REDIS_DEPTH:,} pending",
            floor,
            "us",
            None,
            note="what any claim must write (bench/lua/claim_floor.lua), same run",
            source="claim",
            missing=missing,
        ),
    ]


def _broker(tables: list[Table]) -> list[Line]:
    drain = best_of(tables, "drain, concurrency ")
    what = "drain, broker API, best concurrency"
    if drain is not None:
        what = f"drain, broker API ({drain[0].removeprefix('drain, ')})"
    return [
        Line(what, drain[1] if drain else None, "jobs/s", DRAIN, source="broker"),
        Line(
            "submit -> result visible, p50",
            value_of(tables, "submit -> result visible, p50"),
            "ms",
            RESULT_P50,
            source="broker",
        ),
        Line(
            "submit -> result visible, p99",
            value_of(tables, "submit -> result visible, p99"),
            "ms",
            RESULT_P99,
            source="broker",
        ),
        Line(
            "submit, one at a time (1 client)",
            value_of(tables, "submit, one at a time, 1 client"),
            "jobs/s",
            SUBMIT_ONE,
            source="broker",
        ),
        Line(
            "submit, batched (500)",
            value_of(tables, "submit, batched (500)"),
            "jobs/s",
            SUBMIT_BATCHED,
            source="broker",
        ),
    ]


def _worker(tables: list[Table]) -> list[Line]:
    drain = best_of(tables, "drain, simulation step_ms=0, ")
    what = "drain, worker process, simulation step_ms=0"
    if drain is not None:
        what = f"{what} ({drain[0].rsplit(', ', 1)[-1]})"
    fleet: float | None = None
    fleet_what = f"idle fleet: client commands/s, scaled to {FLEET_SIZE:,} workers"
    for t, row in _rows(tables, lambda first: "idle workers: client commands" in first):
        size = re.match(r"([\d,]+) idle workers", row[0])
        per_size = _cell(t, row, "value")
        if size and per_size is not None and (workers := int(size[1].replace(",", ""))):
            fleet = per_size * FLEET_SIZE / workers
            fleet_what = f"{fleet_what} (measured {workers:,})"
        break
    no_target = "no target"
    return [
        Line(
            what,
            drain[1] if drain else None,
            "jobs/s",
            None,
            f"{no_target} (best peer 2,330)",
            source="worker",
        ),
        Line(
            "submit -> claimed, idle worker, p50",
            value_of(tables, "submit -> claimed, idle worker, p50"),
            "ms",
            None,
            no_target,
            source="worker",
        ),
        Line(
            "submit -> claimed, idle worker, p99",
            value_of(tables, "submit -> claimed, idle worker, p99"),
            "ms",
            None,
            no_target,
            source="worker",
        ),
        Line(fleet_what, fleet, "cmd/s", IDLE_FLEET, source="worker"),
    ]


def _hub(tables: list[Table]) -> list[Line]:
    rates = [
        (int(clients), rate)
        for t in tables
        for row in t.rows
        if (clients := _cell(t, row, "clients")) is not None
        and (rate := _cell(t, row, "subm/s")) is not None
    ]
    what = "hub POST /jobs, one hub process"
    if not rates:
        return [Line(what, None, "subm/s", HUB, source="hub")]
    clients, rate = max(rates, key=lambda item: item[1])
    return [Line(f"{what} ({clients} clients)", rate, "subm/s", HUB, source="hub")]


def _pyz(tables: list[Table]) -> list[Line]:
    def line(what: str, prefix: str, unit: str, target: Target) -> Line:
        return Line(what, first_with(tables, prefix), unit, target, source="pyz")

    return [
        line("worker.pyz size", "pyz size", "MB", PYZ_SIZE),
        line(
            "pyz start -> registered, first run (extracts)",
            "start -> registered, first run",
            "s",
            START,
        ),
        line(
            "pyz start -> registered, later runs (median)",
            "start -> registered, later runs (median",
            "s",
            START,
        ),
        line(
            "pyz start -> registered, dashboard on (median)",
            "start -> registered, dashboard on",
            "s",
            START,
        ),
        line("pyz RSS idle, dashboard off", "RSS idle, dashboard off", "MiB", RSS),
        line("pyz RSS idle, dashboard on", "RSS idle, dashboard on", "MiB", RSS),
    ]


def _webhooks(tables: list[Table]) -> list[Line]:
    no_target = "no target (a notification path)"
    best = best_of(tables, "deliveries, ")
    what = "webhook deliveries" + (f" ({best[0].removeprefix('deliveries, ')})" if best else "")
    return [
        Line(what, best[1] if best else None, "per s", None, no_target, source="webhooks"),
        Line(
            "webhook event -> delivered, p50",
            value_of(tables, "event -> delivered, p50"),
            "ms",
            None,
            no_target,
            source="webhooks",
        ),
    ]


def _scale(tables: list[Table]) -> list[Line]:
    """How far the busiest or idlest cluster primary's Redis CPU is from 1/N of the total,
    in % of 1/N, and the computed capacity of 3 primaries."""
    shares = [
        share
        for t, row in _rows(tables, lambda first: first.startswith("cluster"))
        if (share := _cell(t, row, "CPU share %")) is not None
    ]
    even = 100 / len(shares) if shares else 0.0
    worst = max((abs(share - even) / even * 100 for share in shares), default=None)
    return [
        Line(
            "scale-out: the primary furthest from an even share of Redis CPU",
            worst,
            "% off",
            EVEN_SPLIT,
            source="scale",
        ),
        Line(
            "claims/s 3 primaries can serve (computed)",
            value_of(tables, "3", "claims/s (computed)"),
            "per s",
            None,
            "computed from the Redis time per claim",
            source="scale",
        ),
    ]


def _outputs(tables: list[Table]) -> list[Line]:
    no_target = "no target (moto on loopback bounds it)"
    return [
        Line(
            "output store: 2 MB PNG per job, throughput",
            first_with(tables, "2 MB PNG, one per job", "MB/s"),
            "MB/s",
            None,
            no_target,
            source="outputs",
        ),
        Line(
            "output store: 2 MB PNG per job, time per job p50",
            first_with(tables, "2 MB PNG, one per job", "ms per job p50"),
            "ms",
            None,
            no_target,
            source="outputs",
        ),
    ]


# Issue 16's targets: emp-redis / the best Python peer of one bench-peers run (bench/peers.py
# writes the ratios; its measure labels are the row labels read here).
PEER_TARGETS: Final = (
    ("W1 enqueue one at a time, jobs/s", Target(">=", 1.2, ">= 1.2x")),
    ("W1b batched enqueue, jobs/s", Target(">=", 2.0, ">= 2x")),
    ("W2 drain, 10 slots, jobs/s", Target(">=", 2.0, ">= 2x")),
    ("W2 drain, 1 slot, jobs/s", Target(">=", 1.3, ">= 1.3x")),
    ("W3 submit -> result p50, ms", Target("<=", 0.8, "<= 0.8x")),
    ("W3 submit -> result p99, ms", Target("<=", 1.0, "<= 1x")),
)


def _peers(tables: list[Table]) -> list[Line]:
    """emp-redis's ratio to the best Python peer, per bench-peers measure."""
    missing = "no bench-peers table in this run (see the peers section)"
    return [
        Line(
            f"vs best Python peer: {label}",
            value_of(tables, label, "ratio"),
            "x",
            target,
            source="peers",
            missing=missing,
        )
        for label, target in PEER_TARGETS
    ]


FLEET_COLD = Target(">=", 50.0, ">= 50 % fewer (issue 13)")
FLEET_P95 = Target("<=", 1.0, "<= 1x baseline")
FLEET_JAIN = Target(">=", 0.9, ">= 0.9")
FLEET_CLAIM = Target("<=", 1.5, "<= 1.5x baseline")


def _fleet(tables: list[Table]) -> list[Line]:
    """The issue 13 targets of SCHEDULING_POLICIES=affinity,fit,fair (the `all` row)
    against the baseline row of the same run (n/a where `all` was not available)."""

    def both(column: str) -> tuple[float | None, float | None]:
        return value_of(tables, "baseline", column), value_of(tables, "all", column)

    def ratio(column: str) -> float | None:
        base, every = both(column)
        return every / base if base and every is not None else None

    base_cold, all_cold = both("cold loads/1000")
    fewer = 100 * (1 - all_cold / base_cold) if base_cold and all_cold is not None else None
    missing = "the `all` run was not available (policies not in this build)"
    return [
        Line(
            "fleet replay: cold loads, all policies vs baseline",
            fewer,
            "% fewer",
            FLEET_COLD,
            source="fleet",
            missing=missing,
        ),
        Line(
            "fleet replay: p95 queue wait, all policies vs baseline",
            ratio("wait p95 s"),
            "x",
            FLEET_P95,
            source="fleet",
            missing=missing,
        ),
        Line(
            "fleet replay: Jain's index in the heavy customer's burst, all policies",
            both("Jain in burst")[1],
            "",
            FLEET_JAIN,
            source="fleet",
            missing=missing,
        ),
        Line(
            "fleet replay: Redis time per claim, all policies vs baseline",
            ratio("redis us/claim"),
            "x",
            FLEET_CLAIM,
            source="fleet",
            missing=missing,
        ),
    ]


EXTRACTORS: dict[str, Callable[[list[Table]], list[Line]]] = {
    "claim": _claim,
    "broker": _broker,
    "worker": _worker,
    "hub": _hub,
    "pyz": _pyz,
    "webhooks": _webhooks,
    "scale": _scale,
    "outputs": _outputs,
    "peers": _peers,
    "fleet": _fleet,
}


def summarize(outputs: Mapping[str, str]) -> list[Line]:
    """The summary rows, from each benchmark's printed output (missing ones: n/a)."""
    lines: list[Line] = []
    for name, extract in EXTRACTORS.items():
        lines.extend(extract(parse_tables(outputs.get(name, ""))))
    return lines


def summary_table(lines: Sequence[Line], quick: bool) -> str:
    mode = "quick run" if quick else "full run"
    rows = [[ln.what, ln.measured, ln.unit, ln.target_text, ln.status] for ln in lines]
    title = f"summary: targets of docs/ARCHITECTURE.md ({mode}; one run on this machine, noisy)"
    return table(title, ["what", "measured", "unit", "target", "status"], rows)


# --- BENCHMARKS.md ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one benchmark of `all` produced: its table text, or the error that stopped it."""

    name: str
    text: str | None
    error: str | None
    seconds: float


# Figures a benchmark writes, shown under its tables (paths relative to the repository).
FIGURES: dict[str, tuple[str, str]] = {
    # The figure is whatever `bench fleet` ran last (a full run may follow `all --quick`):
    # its caption sends the reader to the table it belongs to.
    "fleet": (
        "queue wait CDF per scheduling policy, from the run in docs/bench-fleet.md",
        "docs/bench-fleet-wait-cdf.png",
    ),
}


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> list[str]:
    return ["```text", text.rstrip("\n"), "```"]


def markdown(
    outcomes: Sequence[Outcome],
    lines: Sequence[Line],
    *,
    command: str,
    machine: str,
    when: datetime,
    quick: bool,
    speed: str | None = None,
) -> str:
    """BENCHMARKS.md: date, machine, command, the summary, the misses, every full table."""
    mode = "quick mode: smaller sizes, short runs" if quick else "full sizes"
    out = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench all`; do not edit by hand, run it again.",
        "",
        f"- Date: {when.strftime('%Y-%m-%d %H:%M')} UTC",
        f"- Machine: {machine}",
        *([f"- Machine speed at the start of the run: {speed}"] if speed else []),
        f"- Command: `{command}` ({mode})",
        "- Targets: docs/ARCHITECTURE.md#performance-targets. One run on a shared machine: expect",
        "  noise of tens of percent, more on the latency percentiles.",
        "",
        "## Summary",
        "",
        "| what | measured | unit | target | status |",
        "|---|---:|---|---|---|",
    ]
    for ln in lines:
        status = f"**{ln.status}**" if ln.status == "MISSED" else ln.status
        cells = [ln.what, ln.measured, ln.unit, ln.target_text, status]
        out.append("| " + " | ".join(_md(c) for c in cells) + " |")
    out += ["", "## Misses", ""]
    missed = [ln for ln in lines if ln.status == "MISSED"]
    unmeasured = [ln for ln in lines if ln.status == NA]
    for ln in missed:
        assert ln.target is not None
        out.append(f"- {ln.what}: measured {ln.measured} {ln.unit}, target {ln.target.text}.")
    ran = {o.name: o for o in outcomes}
    for ln in unmeasured:
        outcome = ran.get(ln.source)
        if outcome is None:
            why = f"the {ln.source} benchmark did not run"
        elif outcome.error is not None:
            why = f"the {ln.source} benchmark failed: see below"
        else:
            why = ln.missing or f"no value in the {ln.source} table"
        out.append(f"- {ln.what}: not measured ({why}).")
    if not missed and not unmeasured:
        out.append("None: every target was met in this run.")
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        out += ["", "## Failed benchmarks", ""]
        for o in failed:
            out += [f"### {o.name}", "", *_fence(o.error or ""), ""]
        out.pop()
    out += ["", "## Full tables"]
    for o in outcomes:
        if o.text is not None:
            out += ["", f"### {o.name} ({o.seconds:.0f} s)", "", *_section(o.text)]
            if o.name in FIGURES:
                alt, path = FIGURES[o.name]
                out += ["", f"![{alt}]({path})"]
    return "\n".join(out) + "\n"


def _section(text: str) -> list[str]:
    """A benchmark's text as text; a markdown table that follows the line RAW_HEADING (the
    peers benchmark copies bench-peers' own table so) stays markdown."""
    head, sep, raw = text.partition(RAW_HEADING)
    if not sep:
        return _fence(text)
    return [*_fence(head), "", RAW_HEADING, "", raw.strip("\n")]
