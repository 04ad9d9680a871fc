"""`python -m bench fleet` end to end on a tiny slice: real Redis servers (one fresh private
server per run, as the benchmark makes them), the real Lua, real claim calls from simulated
workers in a spawned process. Asserts what the comparison is made of, never a timing."""

from __future__ import annotations

from bench.fleet.compare import Config, compare
from bench.report import parse_tables


async def test_a_tiny_replay_runs_every_job_exactly_once_under_each_policy() -> None:
    config = Config(workers=12, processes=1, factor=600.0, rows=100, runs=("baseline", "affinity"))
    comparison = await compare(config)

    assert comparison.finished_once == {"baseline": True, "affinity": True}
    assert {name: len(waits) for name, waits in comparison.waits.items()} == {
        "baseline": 100,
        "affinity": 100,
    }
    per_policy, per_priority, targets = parse_tables(comparison.text)
    assert per_policy.header[:5] == ("policy", "jobs", "wait p50 s", "wait p95 s", "wait p99 s")
    assert [row[:2] for row in per_policy.rows] == [("baseline", "100"), ("affinity", "100")]
    assert {row[0].split(",")[0] for row in per_priority.rows} == {"baseline", "affinity"}
    # Without an `all` run the targets are listed, unmeasured.
    # Strict order holds no job back; the held columns come from the 'claimed' events.
    held = per_policy.header.index("held jobs")
    assert per_policy.rows[0][held] == "0"
    assert per_policy.rows[1][held].isdigit()
    # Redis's own time per claim comes from the slow log, whichever command sent the claims.
    per_claim = per_policy.header.index("redis us/claim")
    assert all(float(row[per_claim]) > 0 for row in per_policy.rows), per_policy.rows
    # Without an `all` run the targets are listed, unmeasured.
    assert [row[-1] for row in targets.rows] == ["n/a"] * 6
    assert "time compression: 600x" in comparison.text
    assert "model: Zipf" in comparison.text
