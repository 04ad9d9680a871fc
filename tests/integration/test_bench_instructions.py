"""`bench instructions`: Redis's instructions per hot-path script call, counted under
valgrind's callgrind on a real redis-server, so a change to the Lua code can be measured on
a machine too noisy to time it."""

from __future__ import annotations

import shutil

import pytest

from bench import instructions

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")


async def test_a_count_repeats_and_counts_only_the_measured_calls() -> None:
    """The same calls count the same (within a percent), and the set-up (5,000 submissions,
    which cost far more than 10 claims) is not counted."""
    setup, claim = instructions._claim_setup, instructions._claim
    first = await instructions._per_call(setup, claim, 10, handoff=False)
    again = await instructions._per_call(setup, claim, 10, handoff=False)
    assert 100_000 < first < 5_000_000
    assert abs(first - again) / first < 0.01
