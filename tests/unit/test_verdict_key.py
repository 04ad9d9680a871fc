"""The claim's verdict memo is keyed by what the matcher reads of a worker's capabilities
(include/matching.lua matched_part): free GPU memory and warm models are blanked, so a worker
keeps one memo while its VRAM fills and its models load. That is sound only while the matcher
reads neither: were mismatch to match on free memory, say, a verdict memoised with one value
would be served for another. This test fails first."""

from __future__ import annotations

import re
from pathlib import Path

MATCHING = Path(__file__).resolve().parents[2] / "shared" / "lua" / "include" / "matching.lua"


def _function(text: str, name: str) -> str:
    start = text.index(f"local function {name}(")
    end = re.compile(r"^end$", re.M).search(text, start)
    assert end is not None
    return text[start : end.end()]


def test_the_matcher_reads_no_field_the_memo_key_leaves_out() -> None:
    text = MATCHING.read_text(encoding="utf-8")
    # mismatch and every helper it calls (all defined in matching.lua).
    matcher = [_function(text, n) for n in ("mismatch", "gpu_fits", "model_matches", "version")]
    for body in matcher:
        assert "memory_free" not in body
        assert "warm" not in body
    # The prepared capabilities carry the warm models under their own names only.
    prepared = _function(text, "prepare_caps_now")
    assert re.findall(r"^\s+(\w+) = .*warm_models", prepared, re.M) == ["warm", "warm_list"]
    assert "memory_free" not in prepared
