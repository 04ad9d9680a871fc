"""The summary of `python -m bench all` and BENCHMARKS.md, built from canned benchmark output.

The canned texts are one real `python -m bench all --quick` run's tables, verbatim; nothing here
runs a benchmark or asserts a speed.
"""

from __future__ import annotations

import asyncio
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.common import table
from bench.report import (
    PEER_TARGETS,
    Line,
    Outcome,
    Target,
    markdown,
    number,
    parse_tables,
    summarize,
    summary_table,
)

PEER_ROWS = [label for label, _ in PEER_TARGETS]

CLAIM = """\
claim: cost vs queue depth (1% of pending jobs match; target p99 < 2 ms)
------------------------------------------------------------------------
pending  claims  p50 ms  p99 ms  redis p50 us  redis p99 us  fill jobs/s  redis MiB
-------  ------  ------  ------  ------------  ------------  -----------  ---------
1,000     1,000   0.327   0.768           124           307        8,513       3.35
10,000    1,000   0.292    1.16           151           391       13,348       11.1
100,000   1,000   0.324   0.797           154           407       13,168       87.6
"""

BROKER = """\
broker: one process, Redis on loopback, matching on
---------------------------------------------------
what                               value   unit    target
---------------------------------  ------  ------  --------
submit, one at a time, 1 client     5,098  jobs/s  > 10,000
submit, one at a time, 10 clients   8,339  jobs/s
submit, batched (500)              16,654  jobs/s  > 30,000
drain, concurrency 1                2,463  jobs/s   > 4,700
drain, concurrency 10               4,266  jobs/s   > 4,700
drain, concurrency 50               5,883  jobs/s   > 4,700
submit -> result visible, p50       0.746      ms    < 0.75
submit -> result visible, p99        2.06      ms       < 2
"""

WORKER = """\
worker: real worker processes, simulation connector, Redis on loopback
----------------------------------------------------------------------
what                                     value  unit         target
---------------------------------------  -----  -----------  -----------------------
submit -> claimed, idle worker, p50      0.783           ms
submit -> claimed, idle worker, p99       3.58           ms
drain, simulation step_ms=0, 1 slot(s)     981       jobs/s
drain, simulation step_ms=0, 10 slot(s)  1,292       jobs/s
100 idle workers: client commands         50.0        cmd/s  < 100 (1,000 for 1,000)
100 idle workers: Redis CPU              0.435  % of a core
"""

HUB = """\
hub POST /jobs: one hub process (uvicorn, httptools + uvloop), embedded Redis with AOF everysec, 2 s per row, LOG_LEVEL=warning, load from wrk; Linux x86_64, 2 CPUs (x86_64), 24 GiB RAM, Python 3.11.7
--------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------------
clients  requests  errors  subm/s  p50 ms  p99 ms  hub CPU us/req
-------  --------  ------  ------  ------  ------  --------------
1           2,506       0   1,253   0.631    5.05             475
10          5,350       0   2,675    3.46    12.8             297
50          6,293       0   3,146    14.0    68.8             276
best 3,146 submissions/s (target > 3,000/s); at 276 us of hub CPU per request one dedicated core allows ~3,617/s; jobs stored: 14,432
"""

PYZ = """\
pyz: worker-linux-x86_64-cp311.pyz run by a fresh empty venv's Python, Redis on loopback, RSS after 3 s idle
------------------------------------------------------------------------------------------------------------
what                                             value  unit  target
-----------------------------------------------  -----  ----  ------------------
pyz size                                          2.85    MB             < 20 MB
start -> registered, first run (extracts)        0.871     s               < 2 s
start -> registered, later runs (median of 3)    0.232     s               < 2 s
start -> registered, later runs, slowest         0.267     s
start -> registered, dashboard on (median of 2)  0.382     s               < 2 s
RSS idle, dashboard off (median of 4)             43.2   MiB  < 76.3 MiB (80 MB)
RSS idle, dashboard on (median of 2)              50.7   MiB  < 76.3 MiB (80 MB)
extracted on disk (SHIV_ROOT)                     14.9    MB
build.py                                          3.59     s
"""

WEBHOOKS = """\
webhooks: hub processes delivering to a loopback receiver (204 at once, keep-alive), HUB_WEBHOOK_CONCURRENCY=64
---------------------------------------------------------------------------------------------------------------
what                                value  unit
----------------------------------  -----  -----
deliveries, 1 hub(s), 2,000 events  1,508  per s
event -> delivered, p50              1.92     ms
event -> delivered, p99              12.0     ms
deliveries, 2 hub(s), 2,000 events    965  per s
"""
SCALE = """\
scale: Redis load per primary, 9,000 jobs drained by 3 worker processes (measured; target: each primary within +-15% of 1/3: met)
---------------------------------------------------------------------------------------------------------------------------------
setup                          primary            pools    claims  claim share %  redis us/claim  redis CPU s  CPU share %  end-to-end claims/s
-----------------------------  -----------------  -------  ------  -------------  --------------  -----------  -----------  -------------------
single Redis, 1 pool                       redis  default   9,015            100            71.8         0.78          100                5,660
cluster, 3 primaries, 3 pools  cluster-primary-0   pool-1   3,007           33.3            91.5         0.33         33.8                6,358
cluster, 3 primaries, 3 pools  cluster-primary-1   pool-0   3,007           33.3            94.8         0.34         34.7                6,358
cluster, 3 primaries, 3 pools  cluster-primary-2   pool-2   3,007           33.3            96.7         0.31         31.5                6,358

scale: claims/s N primaries can serve (COMPUTED from the measured Redis time per claim, one core per primary, pools spread evenly; not measured end to end)
-----------------------------------------------------------------------------------------------------------------------------------------------------------
primaries  us/claim measured on  redis us/claim  claims/s (computed)
---------  --------------------  --------------  -------------------
1                  single Redis            71.8               13,931
3                       cluster            94.3               31,807
6                       cluster            94.3               63,614
12                      cluster            94.3              127,227
"""
STORE = """\
outputs: storing job outputs in an S3-compatible store (moto on loopback)
-------------------------------------------------------------------------
case                                     MB/s  ms per job p50  ms per job p99
---------------------------------------  ----  --------------  --------------
2 MB PNG, one per job (20 jobs)           122            13.3            71.9
32 MiB file, multipart (8 MiB parts)     90.4             371             371
2 MB PNG, next attempt (already stored)   258            7.76            7.76
"""

FLEET = """\
fleet: 1,073 trace rows on 100 simulated workers, per policy (waits, extra delay and bounds in trace seconds, 60x compressed)
-----------------------------------------------------------------------------------------------------------------------------
policy    jobs   wait p50 s  wait p95 s  wait p99 s  cold loads/1000  idle GB*s  Jain in burst  worst extra s  worst extra, others s  bound s  jobs/s  util %  redis us/claim
--------  -----  ----------  ----------  ----------  ---------------  ---------  -------------  -------------  ---------------------  -------  ------  ------  --------------
baseline  1,073        38.5         252         503              582  1,148,745          0.818              -                      -        -    46.5    56.1             141
affinity  1,073         8.2        87.9         144              357    882,732          0.966            130                    130     30.0    61.6    52.3             119
fit       1,073        42.4         244         553              596  1,216,159          0.808            212                    172     10.0    49.3    60.6             172
fair      1,073        40.9         365         614              611  1,252,414          0.904            478                    209        -    44.9    55.9             162
all       1,073        20.8         136         208              449    995,325           0.91            134                    134     40.0    58.2    58.1             146

fleet: queue wait per priority (trace seconds)
----------------------------------------------
policy, priority       p50 s  p95 s  p99 s
---------------------  -----  -----  -----
baseline, priority 80    1.8   22.7   49.3
baseline, priority 50   40.0    155    285
baseline, priority 20    164    524    884
affinity, priority 80    0.5    7.7   51.1
affinity, priority 50   10.8   76.9    140
affinity, priority 20   36.4    134    346
fit, priority 80         1.8   17.8   91.0
fit, priority 50        44.0    225    331
fit, priority 20         138    564    665
fair, priority 80        1.5   39.2   95.3
fair, priority 50       44.2    247    559
fair, priority 20        154    614    980
all, priority 80         1.1   13.7   64.2
all, priority 50        25.1    132    191
all, priority 20        70.7    194    411

fleet: targets, `all` against baseline in the same run
------------------------------------------------------
target                                          baseline  all                need                        status
----------------------------------------------  --------  -----------------  --------------------------  ------
cold loads per 1,000 jobs                            582  449.2 (23% fewer)  >= 50% fewer than baseline    MISS
p95 queue wait, s                                    252                136                 <= baseline    PASS
Jain's index during the heavy customer's burst     0.818               0.91                      >= 0.9    PASS
Redis time per claim, us                             141      146.3 (1.03x)            <= 1.5x baseline    PASS
worst extra delay vs baseline, others' jobs, s         -                134          <= 40 (the bounds)    MISS
"""

OUTPUTS = {
    "claim": CLAIM,
    "broker": BROKER,
    "worker": WORKER,
    "hub": HUB,
    "pyz": PYZ,
    "webhooks": WEBHOOKS,
    "scale": SCALE,
    "outputs": STORE,
    "fleet": FLEET,
}
WHEN = datetime(2026, 11, 29, 20, 23, tzinfo=UTC)


def by_what(lines: list[Line]) -> dict[str, Line]:
    return {ln.what: ln for ln in lines}


def statuses(lines: list[Line]) -> dict[str, str]:
    return {ln.what: ln.status for ln in lines}


def render(outcomes: list[Outcome], lines: list[Line], quick: bool = True) -> str:
    return markdown(
        outcomes,
        lines,
        command="python -m bench all --quick",
        machine="Linux x86_64, 2 CPUs (x86_64), 24 GiB RAM, Python 3.11.7",
        when=WHEN,
        quick=quick,
    )


def ok(name: str, text: str) -> Outcome:
    return Outcome(name, text, None, 12.0)


# --- parsing ----------------------------------------------------------------------------------


def test_a_table_is_read_by_the_columns_of_its_dashed_rule() -> None:
    [t] = parse_tables(BROKER)
    assert t.title == "broker: one process, Redis on loopback, matching on"
    assert t.header == ("what", "value", "unit", "target")
    assert len(t.rows) == 8
    assert t.rows[0] == ("submit, one at a time, 1 client", "5,098", "jobs/s", "> 10,000")
    assert t.rows[1] == ("submit, one at a time, 10 clients", "8,339", "jobs/s", "")  # no target


def test_what_bench_common_prints_parses_back_cell_for_cell() -> None:
    rows: list[list[object]] = [["a  b", 1234, 0.5, ""], ["c", 12_345.6, float("nan"), "x y"]]
    text = table("title", ["what", "n", "ms", "note"], rows)
    [t] = parse_tables(text)
    assert t.header == ("what", "n", "ms", "note")
    # Two spaces inside a cell do not split it: the columns come from the dashed rule.
    assert t.rows == (("a  b", "1,234", "0.5", ""), ("c", "12,346", "nan", "x y"))


def test_every_table_of_a_run_is_found_with_or_without_blank_lines_between() -> None:
    spaced = parse_tables("\n\n".join(OUTPUTS.values()))
    packed = parse_tables("\n".join(text.rstrip("\n") for text in OUTPUTS.values()))
    assert [t.title.split(":")[0] for t in spaced] == [
        "claim",
        "broker",
        "worker",
        "hub POST /jobs",
        "pyz",
        "webhooks",
        "scale",
        "scale",
        "outputs",
        "fleet",
        "fleet",
        "fleet",
    ]
    assert spaced == packed


def test_text_without_tables_gives_none() -> None:
    assert parse_tables("") == []
    assert parse_tables("Traceback (most recent call last):\n  boom\n-----\n") == []


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("12,345", 12345.0),
        ("0.812", 0.812),
        ("1e-05", 1e-05),
        (" 7 ", 7.0),
        ("nan", None),
        ("inf", None),
        ("", None),
        ("n/a", None),
        ("> 4,700", None),
    ],
)
def test_number(cell: str, value: float | None) -> None:
    assert number(cell) == value


# --- the summary ------------------------------------------------------------------------------


def test_the_summary_of_a_real_quick_run() -> None:
    lines = summarize(OUTPUTS)
    assert statuses(lines) == {
        "claim p99, 100,000 pending (1% match)": "met",
        "claim p99, 1,000,000 pending (1% match)": "n/a",  # a quick run stops at 100,000
        "claim, Redis time p50, 100,000 pending": "MISSED",  # 154 us
        # Runs from before the floor was measured have no column for it: shown, unmeasured.
        "least claim (floor), Redis time p50, 100,000 pending": "—",
        "drain, broker API (concurrency 50)": "met",  # the best of the three concurrencies
        "submit -> result visible, p50": "met",
        "submit -> result visible, p99": "MISSED",
        "submit, one at a time (1 client)": "MISSED",
        "submit, batched (500)": "MISSED",
        "drain, worker process, simulation step_ms=0 (10 slot(s))": "—",
        "submit -> claimed, idle worker, p50": "—",
        "submit -> claimed, idle worker, p99": "—",
        "idle fleet: client commands/s, scaled to 1,000 workers (measured 100)": "met",
        "hub POST /jobs, one hub process (50 clients)": "met",
        "worker.pyz size": "met",
        "pyz start -> registered, first run (extracts)": "met",
        "pyz start -> registered, later runs (median)": "met",
        "pyz start -> registered, dashboard on (median)": "met",
        "pyz RSS idle, dashboard off": "met",
        "pyz RSS idle, dashboard on": "met",
        "webhook deliveries (1 hub(s), 2,000 events)": "—",  # no target
        "webhook event -> delivered, p50": "—",
        "scale-out: the primary furthest from an even share of Redis CPU": "met",
        "claims/s 3 primaries can serve (computed)": "—",
        "output store: 2 MB PNG per job, throughput": "—",
        "output store: 2 MB PNG per job, time per job p50": "—",
        # that quick run had no peers section (bench-peers is opt-in with --quick)
        **{f"vs best Python peer: {row}": "n/a" for row in PEER_ROWS},
        "fleet replay: cold loads, all policies vs baseline": "MISSED",  # 23% fewer
        "fleet replay: p95 queue wait, all policies vs baseline": "met",
        "fleet replay: Jain's index in the heavy customer's burst, all policies": "met",
        "fleet replay: Redis time per claim, all policies vs baseline": "met",
    }
    values = {ln.what: ln.value for ln in lines}
    assert values["output store: 2 MB PNG per job, throughput"] == 122
    assert values["output store: 2 MB PNG per job, time per job p50"] == 13.3
    assert values["webhook deliveries (1 hub(s), 2,000 events)"] == 1508  # the best row
    assert values["webhook event -> delivered, p50"] == 1.92
    assert values["claim p99, 100,000 pending (1% match)"] == 0.797
    assert values["drain, broker API (concurrency 50)"] == 5883
    assert values["submit -> result visible, p99"] == 2.06
    assert values["drain, worker process, simulation step_ms=0 (10 slot(s))"] == 1292
    assert values["idle fleet: client commands/s, scaled to 1,000 workers (measured 100)"] == 500
    assert values["hub POST /jobs, one hub process (50 clients)"] == 3146  # not the "best" line
    assert values["worker.pyz size"] == 2.85
    assert values["pyz start -> registered, later runs (median)"] == 0.232
    assert values["pyz RSS idle, dashboard on"] == 50.7
    # 31.5 % of the Redis CPU where an even split is 33.3 %: 5.5 % off (34.7 % is 4.1 % off)
    furthest = values["scale-out: the primary furthest from an even share of Redis CPU"]
    assert furthest == pytest.approx(5.5, abs=0.05)
    assert values["claims/s 3 primaries can serve (computed)"] == 31807


def test_targets_are_strict_bounds() -> None:
    below, above = Target("<", 2.0, "< 2 ms"), Target(">", 4700.0, "> 4,700")
    assert [below.met(v) for v in (1.99, 2.0, 2.01)] == [True, False, False]
    assert [above.met(v) for v in (4701, 4700, 4699)] == [True, False, False]
    assert Line("x", 2.0, "ms", below).status == "MISSED"
    assert Line("x", None, "ms", below).status == "n/a"
    assert Line("x", 5.0, "ms", None, "no target").status == "—"
    assert Line("x", 5.0, "ms", None, "no target").target_text == "no target"


def test_rss_is_held_to_80_mb_in_mib() -> None:
    def rss(mib: str) -> str:
        text = PYZ.replace("43.2   MiB", f"{mib}   MiB")
        return by_what(summarize({"pyz": text}))["pyz RSS idle, dashboard off"].status

    assert rss("76.2") == "met"
    assert rss("76.3") == "MISSED"  # 80 MB is 76.29 MiB
    assert rss("79.0") == "MISSED"


def test_no_output_at_all_gives_every_row_as_n_a_not_a_crash() -> None:
    lines = summarize({})
    assert len(lines) >= 17
    assert all(ln.value is None for ln in lines)
    assert {ln.status for ln in lines} == {"n/a", "—"}
    assert "claim p99, 100,000 pending (1% match)" in statuses(lines)
    assert "hub POST /jobs, one hub process" in statuses(lines)


def test_missing_rows_nan_and_garbage_show_as_n_a() -> None:
    broker = "\n".join(
        ln for ln in BROKER.splitlines() if "batched" not in ln and "drain" not in ln
    )
    worker = WORKER.replace("50.0        cmd/s", " nan        cmd/s")
    lines = by_what(
        summarize(
            {
                "broker": broker,
                "worker": worker,
                "hub": "hub: it crashed",
                "pyz": "\n".join(PYZ.splitlines()[:5]),
            }
        )
    )
    assert lines["submit, batched (500)"].status == "n/a"
    assert lines["drain, broker API, best concurrency"].status == "n/a"
    assert lines["submit, one at a time (1 client)"].value == 5098  # the rows left still count
    assert lines["idle fleet: client commands/s, scaled to 1,000 workers"].status == "n/a"
    assert lines["hub POST /jobs, one hub process"].status == "n/a"
    assert lines["worker.pyz size"].value == 2.85  # in the part of the table that is there
    assert lines["pyz RSS idle, dashboard on"].status == "n/a"


def test_a_full_run_holds_both_claim_depths_of_design_to_the_target() -> None:
    rows: list[list[object]] = [
        [1_000, 1000, 0.3, 0.7],
        [100_000, 1000, 0.4, 1.2],
        [1_000_000, 1000, 0.6, 2.4],
    ]
    text = table("claim: cost vs queue depth", ["pending", "claims", "p50 ms", "p99 ms"], rows)
    claim = {
        ln.what: (ln.value, ln.status)
        for ln in summarize({"claim": text})
        if ln.what.startswith("claim p99")
    }
    assert claim == {
        "claim p99, 100,000 pending (1% match)": (1.2, "met"),
        "claim p99, 1,000,000 pending (1% match)": (2.4, "MISSED"),
    }


def test_a_largest_depth_below_design_s_is_shown_too() -> None:
    text = table("claim", ["pending", "p99 ms"], [[1_000, 0.5], [20_000, 0.9]])
    claim = {
        ln.what: ln.value for ln in summarize({"claim": text}) if ln.what.startswith("claim p99")
    }
    assert claim == {
        "claim p99, 20,000 pending (1% match)": 0.9,
        "claim p99, 100,000 pending (1% match)": None,
        "claim p99, 1,000,000 pending (1% match)": None,
    }


def test_redis_time_per_claim_is_held_to_its_target_beside_the_least_claim() -> None:
    header = ["pending", "p99 ms", "redis p50 us", "floor p50 us", "x floor"]
    rows: list[list[object]] = [[1_000, 0.4, 50.0, 30.0, 1.67], [100_000, 0.5, 130.0, 65.0, 2.0]]
    text = table("claim", header, rows)
    lines = {ln.what: ln for ln in summarize({"claim": text}) if ln.unit == "us"}
    claim = lines["claim, Redis time p50, 100,000 pending"]
    floor = lines["least claim (floor), Redis time p50, 100,000 pending"]
    assert (claim.value, claim.status, claim.target_text) == (130.0, "MISSED", "<= 60 us")
    # The floor has no target of its own: it is what the claim's target is set against.
    assert (floor.value, floor.status) == (65.0, "—")
    assert "claim_floor.lua" in floor.target_text


def test_the_idle_fleet_is_scaled_by_the_size_measured() -> None:
    rows: list[list[object]] = [["200 idle workers: client commands", 80.0, "cmd/s", ""]]
    text = table("worker", ["what", "value", "unit", "target"], rows)
    [line] = [ln for ln in summarize({"worker": text}) if ln.what.startswith("idle fleet")]
    assert (line.what, line.value, line.status) == (
        "idle fleet: client commands/s, scaled to 1,000 workers (measured 200)",
        400.0,
        "met",
    )


def test_the_printed_summary_has_a_row_per_line_and_a_status_column() -> None:
    lines = summarize(OUTPUTS)
    [t] = parse_tables(summary_table(lines, quick=True))
    assert t.header == ("what", "measured", "unit", "target", "status")
    assert len(t.rows) == len(lines)
    assert ("submit, batched (500)", "16,654", "jobs/s", "> 30,000 jobs/s", "MISSED") in t.rows
    assert ("claim p99, 1,000,000 pending (1% match)", "n/a", "ms", "< 2 ms", "n/a") in t.rows
    assert "quick run" in t.title


# --- BENCHMARKS.md ----------------------------------------------------------------------------


def test_markdown_shape() -> None:
    lines = summarize(OUTPUTS)
    md = render([ok(name, text) for name, text in OUTPUTS.items()], lines).splitlines()
    headings = [ln for ln in md if ln.startswith("#")]
    assert headings == [
        "# Benchmarks",
        "## Summary",
        "## Misses",
        "## Full tables",
        "### claim (12 s)",
        "### broker (12 s)",
        "### worker (12 s)",
        "### hub (12 s)",
        "### pyz (12 s)",
        "### webhooks (12 s)",
        "### scale (12 s)",
        "### outputs (12 s)",
        "### fleet (12 s)",
    ]
    assert "- Date: 2026-11-29 20:23 UTC" in md
    assert "- Machine: Linux x86_64, 2 CPUs (x86_64), 24 GiB RAM, Python 3.11.7" in md
    assert any(ln.startswith("- Command: `python -m bench all --quick` (quick mode") for ln in md)
    start = md.index("| what | measured | unit | target | status |")
    assert md[start + 1] == "|---|---:|---|---|---|"
    summary_rows = md[start + 2 : start + 2 + len(lines)]
    assert all(
        row.startswith("| ") and row.endswith(" |") and row.count(" | ") == 4
        for row in summary_rows
    )
    assert md[start + 2 + len(lines)] == ""
    assert "| submit, batched (500) | 16,654 | jobs/s | > 30,000 jobs/s | **MISSED** |" in md
    assert "| worker.pyz size | 2.85 | MB | < 20 MB | met |" in md
    misses = md[md.index("## Misses") + 2 : md.index("## Full tables") - 1]
    assert misses == [
        "- claim, Redis time p50, 100,000 pending: measured 154 us, target <= 60 us.",
        "- submit -> result visible, p99: measured 2.06 ms, target < 2 ms.",
        "- submit, one at a time (1 client): measured 5,098 jobs/s, target > 10,000 jobs/s.",
        "- submit, batched (500): measured 16,654 jobs/s, target > 30,000 jobs/s.",
        "- fleet replay: cold loads, all policies vs baseline: measured 22.9 % fewer, "
        "target >= 50 % fewer (issue 13).",
        "- claim p99, 1,000,000 pending (1% match): not measured (this run measured 1,000, 10,000, 100,000 pending).",
        *(
            f"- vs best Python peer: {row}: not measured (the peers benchmark did not run)."
            for row in PEER_ROWS
        ),
    ]
    assert (md.count("```text"), md.count("```")) == (9, 9)  # each opened and closed
    # The fleet benchmark's figure follows its tables.
    assert md[-1] == (
        "![queue wait CDF per scheduling policy, from the run in docs/bench-fleet.md]"
        "(docs/bench-fleet-wait-cdf.png)"
    )
    body = "\n".join(md)
    for text in OUTPUTS.values():
        assert text.rstrip("\n") in body  # every full table, verbatim


def test_markdown_says_so_when_nothing_is_missed() -> None:
    lines = [Line("a", 1.0, "ms", Target("<", 2.0, "< 2 ms")), Line("b", 9.0, "ms", None, "none")]
    md = render([ok("claim", CLAIM)], lines)
    assert "## Misses\n\nNone: every target was met in this run.\n" in md
    assert "| b | 9 | ms | none | — |" in md


def test_markdown_reports_a_failed_benchmark_and_its_rows_as_not_measured() -> None:
    outcomes = [
        ok("claim", CLAIM),
        Outcome("hub", None, "RuntimeError: hub did not become ready", 31.0),
    ]
    lines = summarize({"claim": CLAIM})
    md = render(outcomes, lines, quick=False)
    assert (
        "- hub POST /jobs, one hub process: not measured (the hub benchmark failed: see below)."
        in md
    )
    assert "- worker.pyz size: not measured (the pyz benchmark did not run)." in md
    assert (
        "## Failed benchmarks\n\n### hub\n\n```text\nRuntimeError: hub did not become ready\n```\n"
        in md
    )
    assert "### hub (" not in md  # no full table for it
    assert "(full sizes)" in md


def test_markdown_escapes_pipes_in_cells() -> None:
    md = render([], [Line("a | b", 1.0, "ms", Target("<", 2.0, "< 2 | ms"))])
    assert "| a \\| b | 1 | ms | < 2 \\| ms | met |" in md


# --- python -m bench all, with the benchmarks stubbed -------------------------------------------


def test_all_prints_every_table_and_the_summary_and_writes_the_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def fake_run(name: str, quick: bool, limit: float | None = None) -> str:
        assert (quick, limit) == (True, 300)
        if name == "worker":
            raise TimeoutError
        if name == "hub":
            raise RuntimeError("hub did not become ready")
        return OUTPUTS[name]

    monkeypatch.setattr(bench_main, "_run", fake_run)
    out = tmp_path / "BENCHMARKS.md"
    assert bench_main.main(["all", "--quick", "--output", str(out)]) == 1  # a benchmark failed
    printed = capsys.readouterr().out
    for name in ("claim", "broker", "pyz"):
        assert OUTPUTS[name].rstrip("\n") in printed
    assert "hub: FAILED after " in printed
    assert "worker: FAILED after 0 s: TimeoutError: did not finish within 300 s" in printed
    assert "summary: targets of docs/ARCHITECTURE.md (quick run" in printed
    report = out.read_text("utf-8")
    assert f"- Command: `python -m bench all --quick --output {out}`" in report
    assert (
        "- hub POST /jobs, one hub process: not measured (the hub benchmark failed: see below)."
        in report
    )


def test_a_benchmark_that_hangs_is_stopped_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[bool] = []

    async def run(quick: bool) -> str:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.append(True)  # its cleanup runs: processes and Redis get stopped
        return "never"

    monkeypatch.setitem(sys.modules, "bench.hangs", types.SimpleNamespace(run=run))
    with pytest.raises(TimeoutError):
        bench_main._run("hangs", True, 0.05)
    assert stopped == [True]


def test_the_machine_speed_line_lets_runs_of_different_days_be_compared() -> None:
    outcomes = [ok(name, text) for name, text in OUTPUTS.items()]
    lines = summarize(OUTPUTS)
    speed = "Python loop of 1,000,000 additions 610 ms; Redis PING round trip p50 72 us"
    md = markdown(
        outcomes, lines, command="c", machine="m", when=WHEN, quick=True, speed=speed
    ).splitlines()
    assert f"- Machine speed at the start of the run: {speed}" in md
    assert not any("Machine speed" in ln for ln in render(outcomes, lines).splitlines())


def test_fleet_targets_are_not_measured_when_the_all_run_was_not_available() -> None:
    # As compare.py prints a run whose policies this build lacks.
    without_all = "\n".join(
        "all       not available" if line.startswith("all  ") else line
        for line in FLEET.splitlines()
    )
    lines = [ln for ln in summarize({"fleet": without_all}) if ln.source == "fleet"]
    assert [ln.status for ln in lines] == ["n/a"] * 4
    md = render([ok("fleet", without_all)], lines)
    assert (
        "- fleet replay: cold loads, all policies vs baseline: not measured (the `all` run "
        "was not available (policies not in this build))." in md
    )
