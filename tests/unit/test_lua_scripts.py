"""Every Lua script is assembled by shared/lua_source.py and documents its contract in its header:
KEYS, ARGV, what it returns and the invariants it keeps (the brief's rule for the one place
scripts live). Scripts name the library code they need with `--- @include "name"` lines;
these tests hold the includes honest: they resolve, each is named where it is used and used
where it is named, no helper is dead, and only keys.lua joins the prefix to a key name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from shared import lua_source
from shared.lua_source import SCRIPT_NAMES, ScriptSourceError, assemble, include_names, source

LUA = Path(__file__).resolve().parents[2] / "shared" / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua"))
INCLUDES = sorted(p.stem for p in (LUA / "include").glob("*.lua"))


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


@pytest.mark.parametrize("name", INCLUDES)
def test_each_include_says_what_it_is_for(name: str) -> None:
    first = (LUA / "include" / f"{name}.lua").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"-- {name}.lua: "), first


# --- resolving includes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_resolves_to_its_includes_then_itself(name: str) -> None:
    text = source(name)
    body = _text(name)
    assert text.endswith(body)
    # Each needed include once, and nothing that is not needed.
    needed = _closure(name)
    for include in INCLUDES:
        count = text.count(f"-- {include}.lua: ")
        assert count == (1 if include in needed else 0), (name, include, count)


def test_includes_come_after_the_includes_they_name() -> None:
    text = assemble("demo", '--- @include "submit_job"\n--- @include "common"\nreturn 1\n')
    order = [line.split(".lua:")[0][3:] for line in text.splitlines() if _is_include_head(line)]
    assert order == [
        "common",
        "keys",
        "events",
        "matching",
        "idle_workers",
        "queue",
        "policy",
        "submit_job",
    ]


def test_a_missing_include_names_the_script_and_the_include() -> None:
    with pytest.raises(ScriptSourceError, match=r"demo\.lua: include 'nope' not found"):
        assemble("demo", '--- @include "nope"\nreturn 1\n')


def test_a_missing_include_of_an_include_names_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"outer": '-- outer.lua: x\n--- @include "gone"\n'}
    monkeypatch.setattr(lua_source, "include_text", lambda name: _fake_include(fake, name))
    with pytest.raises(
        ScriptSourceError, match=r"include/outer\.lua \(for demo\.lua\): include 'gone' not found"
    ):
        assemble("demo", '--- @include "outer"\n')


def test_an_include_cycle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"a": '--- @include "b"\n', "b": '--- @include "a"\n'}
    monkeypatch.setattr(lua_source, "include_text", lambda name: _fake_include(fake, name))
    with pytest.raises(ScriptSourceError, match=r"demo\.lua: include cycle a -> b -> a"):
        assemble("demo", '--- @include "a"\n')


@pytest.mark.parametrize(
    "line", ["--- @include common", "--- @include 'common'", '--- @include "../common"']
)
def test_a_malformed_include_line_is_refused(line: str) -> None:
    with pytest.raises(ScriptSourceError, match=r"demo\.lua line 2: malformed include"):
        assemble("demo", f"-- demo\n{line}\n")


def _fake_include(files: dict[str, str], name: str) -> str:
    if name not in files:
        raise FileNotFoundError(name)
    return files[name]


# --- names: each include named where used, used where named, no dead helper --------------------
#
# A light reading of the Lua, enough for this code base: comments and strings are blanked,
# an include "provides" the locals it defines at the start of a line (the top level), and a
# file "uses" every identifier it does not itself declare and that is not a field (`K.job`,
# `{ job = ... }`).

_COMMENT = re.compile(r"--[^\n]*")
_BLANK = re.compile(r"--[^\n]*|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"")
_TOP_LEVEL = re.compile(r"^local(?: function)? (\w+(?:, \w+)*)", re.MULTILINE)
_DECLARED = (
    re.compile(r"\blocal\s+function\s+(\w+)"),
    re.compile(r"\blocal\s+(?!function\b)(\w+(?:\s*,\s*\w+)*)"),
    re.compile(r"\bfunction\b[\w.:]*\s*\(([^)]*)\)"),
    re.compile(r"\bfor\s+(\w+(?:\s*,\s*\w+)*)\s+(?:in|=)"),
)
_FIELD = re.compile(r"([{,]\s*)\w+(\s*=)(?!=)")  # `{ name = ...`: a table field, not a use
_IDENT = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


@cache
def _text(name: str) -> str:
    path = LUA / f"{name}.lua" if name in SCRIPTS else LUA / "include" / f"{name.lstrip('+')}.lua"
    return path.read_text(encoding="utf-8")


def _key(name: str) -> str:
    """Includes and scripts share no names today (match.lua vs matching.lua); this keeps them
    apart anyway: include names are marked with '+'."""
    return name if name in SCRIPTS else f"+{name}"


def _code(name: str) -> str:
    return _BLANK.sub(" ", _text(name))


def _split(names: str) -> Iterator[str]:
    return (n.strip() for n in names.split(",") if n.strip())


def _provided(include: str) -> set[str]:
    """The names `include` defines for others. KEYS and ARGV (common.lua's locals for the
    call's arguments) are everyone's, as they are in a plain script."""
    defined = {n for m in _TOP_LEVEL.finditer(_code(f"+{include}")) for n in _split(m[1])}
    return defined - {"KEYS", "ARGV"}


def _declared(name: str) -> set[str]:
    code = _code(name)
    return {n for pattern in _DECLARED for m in pattern.finditer(code) for n in _split(m[1])}


def _used(name: str) -> set[str]:
    return set(_IDENT.findall(_FIELD.sub(r"\1\2", _code(name)))) - _declared(name)


def _direct(name: str) -> list[str]:
    return include_names(_text(name), name)


def _closure(name: str) -> set[str]:
    out: set[str] = set()
    todo = list(_direct(_key(name)))
    while todo:
        include = todo.pop()
        if include not in out:
            out.add(include)
            todo += _direct(f"+{include}")
    return out


PROVIDER = {n: include for include in INCLUDES for n in _provided(include)}
FILES = [*SCRIPTS, *(f"+{i}" for i in INCLUDES)]


def test_no_name_is_provided_by_two_includes() -> None:
    seen: dict[str, str] = {}
    for include in INCLUDES:
        for n in _provided(include):
            assert n not in seen, f"{n} is defined in both {seen[n]}.lua and {include}.lua"
            seen[n] = include


@pytest.mark.parametrize("name", FILES)
def test_each_file_includes_what_it_uses_and_uses_what_it_includes(name: str) -> None:
    used = _used(name)
    direct = _direct(name)
    missing = sorted(f"{n} ({PROVIDER[n]})" for n in used if n in PROVIDER)
    missing = [m for m in missing if m.split(" (")[1][:-1] not in direct]
    assert missing == [], f"{name}.lua uses names whose include it does not name: {missing}"
    unused = [i for i in direct if not used & _provided(i)]
    assert unused == [], f"{name}.lua names includes it does not use: {unused}"


@pytest.mark.parametrize("include", INCLUDES)
def test_every_helper_an_include_defines_is_used_somewhere(include: str) -> None:
    own = _code(f"+{include}")
    for n in sorted(_provided(include)):
        if lua_source.BEGIN_PATTERN.match(f"local function {n}("):
            continue  # a call's set-up: lua_source calls it (tested below)
        inside = len(re.findall(rf"(?<![\w.]){n}\b", own)) > 1  # more than its definition
        elsewhere = any(n in _used(f) for f in FILES if f != f"+{include}")
        assert inside or elsewhere, f"{n} in {include}.lua is never used"


@pytest.mark.parametrize("include", INCLUDES)
def test_every_include_is_needed_by_some_script(include: str) -> None:
    assert any(include in _closure(s) for s in SCRIPTS), f"{include}.lua is included nowhere"


@pytest.mark.parametrize("name", FILES)
def test_only_keys_lua_builds_key_names(name: str) -> None:
    """The prefix (ARGV[1], P) reaches key names only through the table K in keys.lua, so
    the key layout lives in one Lua place, checked against shared/keys.py."""
    code = _code(name)
    if name != "+common":
        assert "ARGV[1]" not in code, f"{name}.lua reads the prefix itself"
    if name not in ("+common", "+keys"):
        assert "P" not in _used(name), f"{name}.lua joins the prefix to a name itself"


def _is_include_head(line: str) -> bool:
    return any(line.startswith(f"-- {i}.lua: ") for i in INCLUDES)


# --- the library: every script as a Redis Function ----------------------------------------------


def test_the_library_registers_one_function_per_script_under_its_versioned_name() -> None:
    text = lua_source.library()
    assert text.startswith(f"#!lua name={lua_source.library_name()}\n")
    assert re.fullmatch(r"emp_[0-9a-f]{16}", lua_source.library_name())
    registered = re.findall(r"function_name = '([a-z0-9_]+)'", text)
    assert registered == [lua_source.function_name(name) for name in SCRIPT_NAMES]
    for name in SCRIPT_NAMES:
        assert f"local function run_{name}()\n{_text(name)}\nend" in text


def test_the_library_defines_each_include_once_after_those_it_names() -> None:
    text = lua_source.library()
    heads = [line.split(".lua:")[0][3:] for line in text.splitlines() if _is_include_head(line)]
    assert sorted(heads) == INCLUDES
    for include in INCLUDES:
        for needed in _direct(f"+{include}"):
            assert heads.index(needed) < heads.index(include), (needed, include)


def test_every_call_starts_with_every_includes_set_up_in_both_forms() -> None:
    """Per-call state lives in upvalues that `begin_*` resets: a call that skipped one would
    see the last call's prefix, time or memo. Both forms call each begin_ the includes
    define; a script sent with EVALSHA calls those of its own includes."""
    begins = [
        (include, b)
        for include in INCLUDES
        for b in lua_source.BEGIN_PATTERN.findall(_text(f"+{include}"))
    ]
    assert {b for _, b in begins} >= {"begin_common", "begin_keys", "begin_policy"}
    library = lua_source.library()
    begin_body = library.split("local function begin(keys, argv)\n", 1)[1].split("\nend\n", 1)[0]
    assert begin_body.splitlines() == [
        f"{b}(keys, argv)"
        for include in lua_source.library_includes()
        for i, b in begins
        if i == include
    ]
    for name in SCRIPT_NAMES:
        text = source(name)
        for include, begin in begins:
            called = f"\n{begin}(CALL_KEYS, CALL_ARGV)\n" in text
            assert called == (include in _closure(name)), (name, begin)


_LITERAL = re.compile(r"-?\d+|'[^']*'|\{[\s\w',]*\}")


def _begin_bodies(code: str) -> str:
    return "\n".join(
        re.findall(r"^local function begin_\w+\([^)]*\)\n(.*?)^end$", code, re.M | re.S)
    )


@pytest.mark.parametrize("include", INCLUDES)
def test_only_constants_and_set_up_state_live_at_an_includes_top_level(include: str) -> None:
    """Anything else kept at the top level would be made once per library load and shared
    by every call. A constant is an UPPER_CASE name given a literal, a memo (`*_memo*`) a
    bounded cache of a pure function (common.lua); every other top-level variable is state
    that a begin_ function of the include sets on each call."""
    code = _code(f"+{include}")
    begins = _begin_bodies(code)
    # Comments blanked, strings kept: a text constant ('4') is a literal too.
    declared = _COMMENT.sub("", _text(f"+{include}"))
    for match in re.finditer(r"^local (?!function)(\w+(?:, \w+)*)(?: = (.*?))? *$", declared, re.M):
        names = list(_split(match[1]))
        values = [v.strip() for v in re.findall(r"\{[^}]*\}|[^,]+", match[2] or "")]
        constant = len(values) == len(names) and all(
            n.isupper() and _LITERAL.fullmatch(v) for n, v in zip(names, values, strict=True)
        )
        if constant:
            continue
        for n in names:
            if "_memo" in n:
                continue  # a bounded cache of a pure function, kept on purpose (common.lua)
            assert re.search(rf"(?<![\w.]){n}\b[\w\s.,]*=(?!=)", begins), (
                f"{include}.lua keeps {n} between calls: set it in a begin_ function"
            )
