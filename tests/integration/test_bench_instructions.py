"""`bench instructions` and `bench worker_instructions`: Redis's instructions per hot-path
script call, counted under valgrind's callgrind on a real redis-server, and a real worker
process's per job, so a change to the Lua code or to the worker's Python can be measured on
a machine too noisy to time it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import instructions, worker_instructions
from bench.common import private_redis
from shared.broker import Broker

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")


async def test_a_count_repeats_and_counts_only_the_measured_calls() -> None:
    """The same calls count the same (within a percent), and the set-up (5,000 submissions,
    which cost far more than 10 claims) is not counted."""
    setup, claim = instructions._claim_setup, instructions._claim
    first = await instructions._per_call(setup, claim, 10, handoff=False)
    again = await instructions._per_call(setup, claim, 10, handoff=False)
    assert 100_000 < first < 5_000_000
    assert abs(first - again) / first < 0.01


async def test_a_workers_count_holds_the_counted_jobs_only(tmp_path: Path) -> None:
    """The worker's start (imports, connections: billions of instructions) and its warm-up
    jobs are not counted: what a handed job costs it is of the order of a script call."""
    async with private_redis() as (url, redis):
        out = tmp_path / "callgrind.out"
        per_job = await worker_instructions._w3(url, redis, Broker(redis), 20, out, warm=5)
    assert 100_000 < per_job < 5_000_000
