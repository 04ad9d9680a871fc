"""The peers benchmark (bench/peers.py): bench-peers' table read back, reduced to emp-redis
against the best Python peer (and BullMQ), and carried into the summary and BENCHMARKS.md.

The table is one real run's, verbatim (tests/fixtures/bench_peers/: `--reps 1 --only
emp,huey,dramatiq --no-w0` on a busy 2-core box); nothing here runs bench-peers or asserts a
speed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import peers
from bench.report import Outcome, markdown, parse_tables, summarize

RECORDED = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "bench_peers"
    / "run-2026-12-05-emp-huey-dramatiq.md"
).read_text(encoding="utf-8")

# Rows as run.py prints them for BullMQ and for a peer that failed every repetition (its
# cells read 'median (min\u2013max)', with an en dash).
BULLMQ_ROWS = """\
| bullmq (concurrency 1) | 4,009 (3,900\u20134,100) | 18,609 (18,000\u201319,000) | 2,994 | 20,000 | 0.31 | 1.41 | 5.92 | 500 x3 |
| bullmq (concurrency 10) | (same as above) |  | 7,833 (7,700\u20137,900) | 20,000 | 0.30 | 1.39 | 6.10 | 500 x3 |
| rq (SimpleWorker) | FAILED | | | | | | | |
"""


def _with_bullmq() -> str:
    anchor = "| emp-redis (this project, 10 slots)"
    return RECORDED.replace(anchor, BULLMQ_ROWS + anchor)


def by_label(comparisons: list[peers.Comparison]) -> dict[str, peers.Comparison]:
    return {c.measure.label: c for c in comparisons}


def test_the_recorded_table_is_read_row_by_row() -> None:
    rows = peers.parse_peer_table(RECORDED)
    assert [r.label for r in rows] == [
        "dramatiq (1 proc x 8 thr)",
        "huey",
        "emp-redis (this project, 10 slots)",
        "emp-redis (this project, 1 slot)",
    ]
    assert [r.kind for r in rows] == ["python", "python", "emp", "emp"]
    emp_1 = rows[3]
    assert emp_1.value("W1 enqueue") is None  # "(same as above)"
    assert emp_1.value("W2 drain") == 1673
    assert rows[1].value("W1b") is None  # "—": huey has no batch API


def test_each_measure_is_held_against_the_best_python_peer() -> None:
    c = by_label(peers.compare(peers.parse_peer_table(RECORDED)))
    w1 = c["W1 enqueue one at a time, jobs/s"]
    assert (w1.emp, w1.best_python) == (10004, ("huey", 22441))
    assert w1.python_ratio == pytest.approx(10004 / 22441)
    assert c["W2 drain, 1 slot, jobs/s"].emp == 1673  # the 1-slot row
    assert c["W2 drain, 10 slots, jobs/s"].emp == 2975
    # Latency: the best peer is the fastest, and a ratio above 1 means emp-redis is slower.
    p50 = c["W3 submit -> result p50, ms"]
    assert (p50.emp, p50.best_python) == (1.09, ("huey", 0.51))
    assert p50.python_ratio == pytest.approx(1.09 / 0.51)
    # No Python peer of this run batches: no ratio rather than a made-up one.
    w1b = c["W1b batched enqueue, jobs/s"]
    assert (w1b.emp, w1b.best_python, w1b.python_ratio) == (32832, None, None)
    assert all(x.best_bullmq is None for x in c.values())


def test_bullmq_gets_its_own_columns_and_never_counts_as_a_python_peer() -> None:
    c = by_label(peers.compare(peers.parse_peer_table(_with_bullmq())))
    assert c["W1b batched enqueue, jobs/s"].best_python is None  # rq FAILED, bullmq apart
    assert c["W1b batched enqueue, jobs/s"].best_bullmq == 18609
    assert c["W2 drain, 10 slots, jobs/s"].best_bullmq == 7833  # its best configuration
    assert c["W3 submit -> result p50, ms"].best_bullmq == 1.39
    assert c["W3 submit -> result p50, ms"].best_python == ("huey", 0.51)
    text = peers.render(_with_bullmq(), "--reps 3")
    header = text.splitlines()[2].split()
    assert header[-4:] == ["BullMQ", "ratio", "vs", "BullMQ"]


def test_the_reduced_table_feeds_the_summary_with_the_issue_targets() -> None:
    text = peers.render(RECORDED, "--reps 1 --only emp,huey,dramatiq --no-w0")
    lines = {ln.what: ln for ln in summarize({"peers": text}) if ln.source == "peers"}
    w1 = lines["vs best Python peer: W1 enqueue one at a time, jobs/s"]
    assert (w1.value, w1.status) == (0.45, "MISSED")  # the printed ratio, target >= 1.2
    assert lines["vs best Python peer: W1b batched enqueue, jobs/s"].status == "n/a"
    p99 = lines["vs best Python peer: W3 submit -> result p99, ms"]
    assert (p99.value, p99.target_text) == (1.24, "<= 1x")
    assert len(parse_tables(text)) == 1  # bench-peers' own table is not read as ours


def test_benchmarks_md_shows_the_ratios_as_text_and_the_peer_table_as_markdown() -> None:
    text = peers.render(RECORDED, "--reps 1")
    outcomes = [Outcome("peers", text, None, 58.0)]
    md = markdown(
        outcomes,
        summarize({"peers": text}),
        command="python -m bench peers",
        machine="m",
        when=datetime(2026, 12, 5, 21, 52, tzinfo=UTC),
        quick=False,
    )
    section = md[md.index("### peers") :]
    fenced, _, after = section.partition("```\n")
    assert "W1 enqueue one at a time, jobs/s" in fenced
    assert "| huey | 22,441 | — | 4,673 |" in after  # outside any fence: a markdown table
    assert "| vs best Python peer: W1 enqueue one at a time, jobs/s | 0.45 | x | >= 1.2x |" in md


def test_without_bench_peers_the_benchmark_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(peers.DIR_ENV, str(tmp_path))  # no run.sh there
    assert peers.peers_dir() is None
    text = bench_main._run("peers", True)
    assert (
        text
        == f"peers: skipped: no bench-peers run.sh in {tmp_path} (set EMP_BENCH_PEERS to its folder)"
    )


def test_the_folder_beside_the_checkout_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout = tmp_path / "emp-redis"
    (tmp_path / "shared" / "bench-peers").mkdir(parents=True)
    (tmp_path / "shared" / "bench-peers" / "run.sh").write_text("exit 0\n")
    monkeypatch.delenv(peers.DIR_ENV, raising=False)
    monkeypatch.setattr(peers, "ROOT", checkout)
    assert peers.peers_dir() == tmp_path / "shared" / "bench-peers"


@pytest.mark.parametrize(("flags", "runs_peers"), [([], False), (["--peers"], True)])
def test_a_quick_all_runs_peers_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: list[str], runs_peers: bool
) -> None:
    ran: list[str] = []

    def fake_run(name: str, quick: bool, limit: float | None = None) -> str:
        ran.append(name)
        if name == "peers":
            assert limit == bench_main.LIMIT_PEERS_S  # minutes, not the quick limit
            return peers.render(RECORDED, "--reps 1")
        return ""

    monkeypatch.setattr(bench_main, "_run", fake_run)
    out = tmp_path / "BENCHMARKS.md"
    assert bench_main.main(["all", "--quick", "--output", str(out), *flags]) == 0
    assert ("peers" in ran) == runs_peers
    report = out.read_text("utf-8")
    assert (bench_main.PEERS_SKIPPED_QUICK in report) != runs_peers
