"""Every Lua script is loaded by shared/scripts.py and documents its contract in its header:
KEYS, ARGV, what it returns and the invariants it keeps (the brief's rule for the one place
scripts live)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.scripts import SCRIPT_NAMES

LUA = Path(__file__).resolve().parents[2] / "shared" / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua") if p.stem != "lib")


def test_every_script_file_is_loaded_and_every_loaded_script_exists() -> None:
    assert sorted(SCRIPT_NAMES) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_header_states_keys_argv_returns_and_invariants(name: str) -> None:
    lines = (LUA / f"{name}.lua").read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header, f"{name}.lua has no header"
    assert header[0].startswith(f"-- {name}.lua: "), header[0]
    for part in ("KEYS[1]", "ARGV[", "Returns", "Invariants"):
        assert part in text, f"{name}.lua header lacks {part}"
