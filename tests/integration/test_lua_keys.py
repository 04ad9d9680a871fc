"""The Lua key table (shared/lua/include/keys.lua) builds exactly the names shared/keys.py
builds: the same members, the same strings, with and without a prefix. Run in Redis, so it
checks the Lua that the scripts really run, not a reading of its text."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis

from shared.keys import Keys
from shared.lua_source import SCRIPT_NAMES, assemble, source

# ARGV[4..]: groups of member name, argument count, arguments. Returns the sorted member
# names of K, then per group "string:<value>" or "function:<value of the call>".
PROBE = """
--- @include "keys"
local names = {}
for name in pairs(K) do names[#names + 1] = name end
table.sort(names)
local out, i = { names }, 4
while i <= #ARGV do
  local member, n = K[ARGV[i]], tonumber(ARGV[i + 1])
  if type(member) == 'function' then
    out[#out + 1] = 'function:' .. member(unpack(ARGV, i + 2, i + 1 + n))
  else
    out[#out + 1] = type(member) .. ':' .. tostring(member)
  end
  i = i + 2 + n
end
return out
"""

# Awkward but legal ids: separators and a hash tag inside an argument must pass through.
SAMPLES = ("j-1", "w:{x}", "failed", "cls 9", "comfyui", "acme", "abc123", "28000000")


# Keys no script builds: the gateway's grants, read and written from Python only, and
# `status_index`, which only picks one of the keys above by a job status.
NOT_BUILT_IN_LUA = frozenset(
    {"gateway_grants", "gateway_workers", "gateway_revoked", "status_index"}
)


def _members() -> Iterator[tuple[str, bool, list[list[str]]]]:
    """(name, is a builder function, argument lists to try) for each public Keys member
    that a script may build."""
    samples = itertools.cycle(SAMPLES)
    for name, member in vars(Keys).items():
        if name.startswith("_") or name == "prefix" or name in NOT_BUILT_IN_LUA:
            continue
        if isinstance(member, property):
            yield name, False, [[]]
            continue
        params = list(inspect.signature(member).parameters.values())[1:]
        args = [next(samples) for _ in params]
        required = sum(p.default is inspect.Parameter.empty for p in params)
        yield name, True, [args[:n] for n in range(required, len(params) + 1)]


MEMBERS = list(_members())


@pytest.fixture
def probe(redis_url: str) -> Iterator[Any]:
    client = SyncRedis.from_url(redis_url, decode_responses=True)
    script = client.register_script(assemble("probe", PROBE))
    yield lambda prefix, *args: script(
        keys=[Keys(prefix).pending], args=[prefix, 1000, 1000, *args]
    )
    client.close()


def test_the_builders_cover_every_key_kind() -> None:
    assert {name for name, _, _ in MEMBERS} >= {"job", "pending", "leases", "service_classes"}
    assert any(len(calls) > 1 for _, _, calls in MEMBERS)  # an optional argument is tried


@pytest.mark.parametrize("prefix", ["", "emp:", "{emp}:"])
def test_lua_key_table_equals_shared_keys(probe: Any, prefix: str) -> None:
    keys = Keys(prefix)
    argv: list[str | int] = []
    expected = []
    for name, is_builder, calls in MEMBERS:
        for args in calls:
            argv += [name, len(args), *args]
            value = getattr(keys, name)(*args) if is_builder else getattr(keys, name)
            expected.append(f"{'function' if is_builder else 'string'}:{value}")
    names, *got = probe(prefix, *argv)
    assert sorted(names) == sorted(name for name, _, _ in MEMBERS)
    assert got == expected


def test_no_script_touches_the_keys_it_does_not_build() -> None:
    keys = Keys()
    for name in sorted(NOT_BUILT_IN_LUA - {"status_index"}):
        suffix = getattr(keys, name)
        for script in SCRIPT_NAMES:
            assert suffix not in source(script), f"{script} uses {suffix}"


def test_every_script_compiles(redis_url: str) -> None:
    """Every assembled script loads: each include's helpers fit Lua's limits together."""
    with SyncRedis.from_url(redis_url) as client:
        for name in SCRIPT_NAMES:
            assert client.script_load(source(name))
