"""The Lua code Redis runs: the scripts in `shared/lua/`, assembled from their includes.

A script names the library code it needs with `--- @include "name"` lines (as BullMQ does),
each naming `shared/lua/include/name.lua`; includes name their own includes the same way.

The code goes to Redis in one of two forms, made from the same files:
- **the library** (`library()`): every include once, then each script as a function,
  registered as a Redis Function (`FCALL`). Redis compiles it and makes its ~110 helper
  functions once, when it is loaded; a call runs only the script's own code. This is the
  form used wherever the server has Redis Functions (7.0+).
- **a script** (`source(name)`): the includes that script needs, then the script, for
  `EVALSHA`. Redis runs the whole text on every call, so every helper is made again each
  time (about 20 us of a claim's server time); it is the fallback for servers without
  Functions and for users not allowed to load them (shared/scripts.py).

The helpers outlive a call in the library, so nothing of one call may stay in an upvalue:
what a call needs of its own (its arguments, the key prefix, the cached server time, the
memos) is set by a `begin_<include>` function of the include that holds it, and every call
starts by calling all of them in include order (`BEGIN_PATTERN`). Both forms call them, so
both run exactly the same code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Final

from shared.errors import EmpError

SCRIPT_NAMES: Final = (
    "submit",
    "submit_batch",
    "claim",
    "peek",
    "heartbeat",
    "register",
    "deregister",
    "progress",
    "complete",
    "complete_claim",
    "fail",
    "release",
    "cancel",
    "retry",
    "reap",
    "cleanup",
    "worker_state",
    "match",
    "choose_eval",
    "reprioritize",
    "expire_unclaimed",
    "rate_limit",
    "publish_policy",
    "webhook_defer",
    "webhook_take",
    "webhook_settle",
    "webhook_redeliver",
    "sample_depth",
)

INCLUDE_PREFIX: Final = "--- @include"
_INCLUDE: Final = re.compile(r'--- @include "(?P<name>[a-z0-9_]+)"\s*')
# An include's per-call set-up: `local function begin_<its name>(keys, argv)`.
BEGIN_PATTERN: Final = re.compile(r"^local function (begin_[a-z0-9_]+)\(", re.MULTILINE)
# A script's Redis Function flags: `--- @flags allow-oom` (its header says why).
_FLAGS: Final = re.compile(r"^--- @flags((?: [a-z-]+)+)$", re.MULTILINE)
# The library's name, and each function's, start with this and the library's digest, so
# that two versions of the code (a rolling upgrade) live side by side in one Redis.
LIBRARY_PREFIX: Final = "emp_"


class ScriptSourceError(EmpError):
    """A script's includes do not resolve (missing file, malformed line, cycle): a packaging
    or programming error, raised when the scripts are loaded rather than when first called."""


def _lua_text(relative: str) -> str:
    path = resources.files("shared") / "lua" / relative
    return path.read_text(encoding="utf-8")


def script_text(name: str) -> str:
    """Script `name`'s own text (shared/lua/name.lua), without its includes."""
    return _lua_text(f"{name}.lua")


def include_names(text: str, where: str) -> list[str]:
    """The includes `text` names, in order. A line that starts like an include but does not
    parse is an error rather than a silently missing function."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(INCLUDE_PREFIX):
            continue
        match = _INCLUDE.fullmatch(line)
        if match is None:
            raise ScriptSourceError(
                f'{where} line {number}: malformed include {line!r} (write --- @include "name")'
            )
        out.append(match["name"])
    return out


@cache
def include_text(name: str) -> str:
    return _lua_text(f"include/{name}.lua")


def resolve(script: str, text: str) -> list[str]:
    """The includes `text` (script `script`) needs, transitively: each once, each after the
    includes it names, otherwise in the order they are named. Lua's locals are visible only
    below their definition, so this order is what makes every helper defined before use."""
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise ScriptSourceError(f"{script}.lua: include cycle {cycle}")
        where = f"{script}.lua" if not chain else f"include/{chain[-1]}.lua (for {script}.lua)"
        try:
            body = include_text(name)
        except FileNotFoundError:
            raise ScriptSourceError(
                f"{where}: include {name!r} not found (no shared/lua/include/{name}.lua)"
            ) from None
        for needed in include_names(body, f"include/{name}.lua (for {script}.lua)"):
            visit(needed, (*chain, name))
        order.append(name)

    for name in include_names(text, f"{script}.lua"):
        visit(name, ())
    return order


def begin_calls(includes: Iterable[str], keys: str, argv: str) -> str:
    """The Lua statements that start a call: each include's `begin_*`, in include order."""
    return "\n".join(
        f"{begin}({keys}, {argv})"
        for name in includes
        for begin in BEGIN_PATTERN.findall(include_text(name))
    )


def assemble(script: str, text: str) -> str:
    """`text` as one `EVAL` script: preceded by the includes it needs (see `resolve`) and by
    their per-call set-up, which gets the call's KEYS and ARGV (common.lua declares locals of
    those names, so they are kept under other names first)."""
    includes = resolve(script, text)
    return "\n".join(
        [
            "local CALL_KEYS, CALL_ARGV = KEYS, ARGV",
            *(include_text(name) for name in includes),
            begin_calls(includes, "CALL_KEYS", "CALL_ARGV"),
            text,
        ]
    )


@cache
def source(name: str) -> str:
    """The full text `EVALSHA` runs for script `name`: its includes, then the script."""
    return assemble(name, script_text(name))


def includes_of(texts: Iterable[str], where: str) -> tuple[str, ...]:
    """Every include some of `texts` needs, each once and after those it needs: the order a
    library of those scripts defines them in."""
    wanted = "\n".join(
        f'{INCLUDE_PREFIX} "{name}"' for text in texts for name in include_names(text, where)
    )
    return tuple(resolve(where, wanted))


@cache
def library_includes() -> tuple[str, ...]:
    """Every include some script needs, in the order the library defines them."""
    return includes_of((script_text(name) for name in SCRIPT_NAMES), "the library")


@cache
def library_digest() -> str:
    """What names this version of the library: a digest of its scripts' code."""
    code = "\n".join(
        [*(include_text(name) for name in library_includes())]
        + [script_text(name) for name in SCRIPT_NAMES]
    )
    return hashlib.sha1(code.encode()).hexdigest()[:16]


def flags_of(text: str) -> tuple[str, ...]:
    """The flags a script registers with (its `--- @flags` lines). A Redis Function without
    `allow-oom` is refused whole when Redis is at maxmemory, where an EVALSHA script runs
    until its first write that could grow memory: a script that only frees memory says
    `allow-oom` to keep running then."""
    return tuple(flag for match in _FLAGS.finditer(text) for flag in match[1].split())


def library_name() -> str:
    return f"{LIBRARY_PREFIX}{library_digest()}"


def function_name(script: str) -> str:
    """The Redis Function that runs `script` in this version of the library."""
    return f"{library_name()}_{script}"


@cache
def library() -> str:
    """The `FUNCTION LOAD` text of this version's library: every script, registered under
    `function_name`."""
    return function_library(library_name(), {name: script_text(name) for name in SCRIPT_NAMES})


def function_library(name: str, scripts: Mapping[str, str]) -> str:
    """The `FUNCTION LOAD` text of library `name` holding `scripts` (script name -> text):
    every include they need once, a `begin` that starts any call, then one local function
    per script (its text as the body: a script's top-level `return` is that function's),
    each registered as `{name}_{script}` with its `--- @flags`."""
    includes = includes_of(scripts.values(), "the library")
    parts = [
        f"#!lua name={name}",
        *(include_text(include) for include in includes),
        "local function begin(keys, argv)",
        begin_calls(includes, "keys", "argv"),
        "end",
    ]
    for script, text in scripts.items():
        parts += [f"local function run_{script}()", text, "end"]
    for script, text in scripts.items():
        flags = ", ".join(f"'{flag}'" for flag in flags_of(text))
        parts.append(
            f"redis.register_function{{function_name = '{name}_{script}', "
            f"callback = function(keys, argv) begin(keys, argv) return run_{script}() end, "
            f"flags = {{{flags}}}}}"
        )
    return "\n".join(parts) + "\n"
