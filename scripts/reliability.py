"""RELIABILITY.md: the chaos matrix, generated from the chaos tests so it cannot drift.

    python -m scripts.reliability [RUN_OUTPUT ...]   write RELIABILITY.md
    python -m scripts.reliability --check            fail if RELIABILITY.md is out of date

Each scenario is a test function in `tests/chaos/test_*.py`; what it does and what it
asserts come from the "Does:" and "Asserts:" paragraphs of its docstring, and a test marked
`xfail` is listed as a known bug with the marker's reason. Rows follow the issue's
numbering (ISSUE_ORDER), then any other scenario. RUN_OUTPUT files hold the lines
the tests print (`pytest tests/chaos -s` output, or the file named by EMP_CHAOS_REPORT):

    ACCOUNTING <scenario>: submitted=N completed=N failed=N cancelled=N lost=N completed_twice=N
    MEASURED <scenario>: key=value ...

The last lines for a scenario become its "last measured" entry, dated today; scenarios the
run did not cover keep the entry already in RELIABILITY.md. `--check` renders the file from
the tests and the entries it already holds and fails (exit 1) on any difference: a
scenario without a test, a test without a row, or a changed docstring.

The file ends with a security section, generated the same way from the rest of `tests/`:
every `test_security_*.py` module names an attack class (its docstring's first paragraph),
and every test whose docstring holds "Attack: ... Refused: ..." is a row saying what was
tried and what happens instead. A new attack test, or a changed one, changes the file.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "chaos"
DOC = ROOT / "RELIABILITY.md"
# The module that runs `--check` from the test suite is not a scenario.
NOT_SCENARIOS = frozenset({"test_reliability_doc.py"})
# The matrix as the issue numbers it. The tests are grouped in files by kind of fault, which
# interleaves these; the table keeps the issue's order and lists any other scenario after.
ISSUE_ORDER = (
    "kill9",
    "sigstop",
    "redis_restart",
    "hub_failover",
    "partition",
    "storm",
    "cancel_storm",
)

_LINE = re.compile(r"\b(ACCOUNTING|MEASURED) ([A-Za-z0-9_]+): (.*?)\s*$")
_ROW = re.compile(r"^\| \*\*(?P<name>[A-Za-z0-9_]+)\*\*")
_CODE = re.compile(r"`((?:ACCOUNTING|MEASURED) [A-Za-z0-9_]+: [^`]*)`")
_WHEN = re.compile(r"\((?P<when>measured [^)]*)\)")


class ReliabilityError(Exception):
    """The tests or the inputs are not in the shape this script documents."""


@dataclass(frozen=True)
class Scenario:
    name: str  # the test function's name without "test_"
    path: str  # relative to the repository root
    does: str
    asserts: str
    known_bug: str | None  # the xfail reason, for a scenario that documents a bug


@dataclass(frozen=True)
class Measurement:
    accounting: str | None
    measured: str | None
    when: str  # e.g. "measured 2026-11-29, 2 CPUs"


# -- the tests ---------------------------------------------------------------------------


def _paragraph(doc: str, label: str, test: str) -> str:
    match = re.search(rf"(?:^|\n)\s*{label}:(.*?)(?=\n\s*\n|\n\s*[A-Z][a-z]+:|\Z)", doc, re.S)
    if match is None:
        raise ReliabilityError(f"{test}: the docstring has no '{label}:' paragraph")
    return " ".join(match.group(1).split())


def _xfail_reason(node: ast.AsyncFunctionDef | ast.FunctionDef) -> str | None:
    for deco in node.decorator_list:
        call = deco if isinstance(deco, ast.Call) else None
        target = call.func if call is not None else deco
        if ast.unparse(target) != "pytest.mark.xfail":
            continue
        for kw in call.keywords if call is not None else []:
            if kw.arg == "reason" and isinstance(kw.value, ast.Constant):
                return " ".join(str(kw.value.value).split())
        return "xfail"
    return None


def discover(tests_dir: Path = TESTS) -> list[Scenario]:
    """Every scenario test: those of ISSUE_ORDER in that order, then the others in file
    then source order."""
    found: list[Scenario] = []
    for path in sorted(tests_dir.glob("test_*.py")):
        if path.name in NOT_SCENARIOS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            if not node.name.startswith("test_"):
                continue
            where = f"{path.name}::{node.name}"
            doc = ast.get_docstring(node) or ""
            found.append(
                Scenario(
                    name=node.name.removeprefix("test_"),
                    path=_relative(path),
                    does=_paragraph(doc, "Does", where),
                    asserts=_paragraph(doc, "Asserts", where),
                    known_bug=_xfail_reason(node),
                )
            )
    names = [s.name for s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ReliabilityError(f"scenario names used twice: {', '.join(duplicates)}")
    return sorted(found, key=_issue_rank)


def _issue_rank(scenario: Scenario) -> int:
    if scenario.name in ISSUE_ORDER:
        return ISSUE_ORDER.index(scenario.name)
    return len(ISSUE_ORDER)


def _relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


# -- the security tests -----------------------------------------------------------------

_ATTACK = re.compile(
    r"(?:^|\s)Attack:(?P<attack>.*?)\sRefused:(?P<refused>.*?)(?:\n\s*\n|\Z)", re.S
)


@dataclass(frozen=True)
class AttackClass:
    path: str  # a test_security_*.py module, relative to the repository root
    summary: str  # the first paragraph of its docstring


@dataclass(frozen=True)
class Attack:
    path: str
    test: str
    attack: str
    refused: str


@dataclass(frozen=True)
class Security:
    classes: tuple[AttackClass, ...] = ()
    attacks: tuple[Attack, ...] = ()


def discover_security(tests_root: Path) -> Security:
    """The attack classes (test_security_*.py modules) and the attack tests ("Attack:" and
    "Refused:" in a test's docstring) under `tests_root`, in path then source order."""
    classes: list[AttackClass] = []
    attacks: list[Attack] = []
    for path in sorted(tests_root.rglob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        security_module = path.name.startswith("test_security_")
        if not security_module and "Attack:" not in text:
            continue
        tree = ast.parse(text, filename=str(path))
        where = _relative(path)
        if security_module:
            first = (ast.get_docstring(tree) or "").split("\n\n", 1)[0]
            if not first.strip():
                raise ReliabilityError(f"{where}: a security test module needs a docstring")
            classes.append(AttackClass(where, " ".join(first.split())))
        for node in tree.body:
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            doc = ast.get_docstring(node) or ""
            if not node.name.startswith("test_") or "Attack:" not in doc:
                continue
            match = _ATTACK.search(doc)
            if match is None:
                raise ReliabilityError(
                    f"{where}::{node.name}: an 'Attack:' needs a 'Refused:' after it"
                )
            attacks.append(
                Attack(
                    where,
                    node.name,
                    " ".join(match["attack"].split()),
                    " ".join(match["refused"].split()),
                )
            )
    return Security(tuple(classes), tuple(attacks))


SECURITY_HEADER = """
## Security: attacks tried and refused

Generated with the table above, from the rest of `tests/`: each
`tests/**/test_security_*.py` module is a class of attack (its docstring's first
paragraph), and each test whose docstring says "Attack: ... Refused: ..." is a row below,
what a hostile client, worker or web page tried and what the system does instead. Each
row's test fails if the refusal stops holding; `python -m scripts.reliability --check`
fails if this section and the tests disagree.

### Attack classes

| Module | What it attacks |
| --- | --- |
"""


def render_security(security: Security) -> str:
    if not security.classes and not security.attacks:
        return ""
    rows = [f"| `{c.path}` | {_cell(c.summary)} |" for c in security.classes]
    text = SECURITY_HEADER + "\n".join(rows) + "\n"
    if security.attacks:
        text += "\n### Attacks\n\n| Attack | Refused | Test |\n| --- | --- | --- |\n"
        text += "\n".join(
            f"| {_cell(a.attack)} | {_cell(a.refused)} | `{a.path}::{a.test}` |"
            for a in security.attacks
        )
        text += "\n"
    return text


# -- measurements ------------------------------------------------------------------------


def parse_run(lines: Iterable[str], when: str) -> dict[str, Measurement]:
    """The last ACCOUNTING / MEASURED lines per scenario in a run's output."""
    accounting: dict[str, str] = {}
    measured: dict[str, str] = {}
    for line in lines:
        match = _LINE.search(line)
        if match is None:
            continue
        kind, name, rest = match.groups()
        text = f"{kind} {name}: {rest}"
        (accounting if kind == "ACCOUNTING" else measured)[name] = text
    return {
        name: Measurement(accounting.get(name), measured.get(name), when)
        for name in sorted(set(accounting) | set(measured))
    }


def parse_doc(text: str) -> tuple[list[str], dict[str, Measurement]]:
    """The scenarios RELIABILITY.md lists, in order, and the measurement of each."""
    listed: list[str] = []
    found: dict[str, Measurement] = {}
    for line in text.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        name = row["name"]
        listed.append(name)
        last_cell = line.rstrip().rstrip("|").rsplit(" | ", 1)[-1]
        codes = _CODE.findall(last_cell)
        when = _WHEN.search(last_cell)
        if codes and when is not None:
            acc = next((c for c in codes if c.startswith("ACCOUNTING")), None)
            meas = next((c for c in codes if c.startswith("MEASURED")), None)
            found[name] = Measurement(acc, meas, when["when"])
    return listed, found


def today(cpus: int | None = None) -> str:
    date = datetime.datetime.now(datetime.UTC).date().isoformat()
    return f"measured {date}, {cpus or os.cpu_count() or 1} CPUs"


# -- rendering ---------------------------------------------------------------------------

HEADER = """\
# Reliability: the chaos matrix

Real processes under failure: a Redis server with AOF (or, for the Sentinel scenarios, a
primary with two replicas and three sentinels; for `cluster_failover`, a Redis Cluster of
three primaries with one replica each), one or two hubs (`python -m hub`), several
workers (`python -m worker`, simulation connector), jobs submitted over the REST API. Each
scenario ends with an exact accounting of every accepted job, read from Redis itself (job
hashes, leases, the `events` stream):

- **lost**: accepted (HTTP 201, or 200 when a retried submission had been written) but at
  the end neither completed, failed nor cancelled, nor legitimately waiting (pending in
  the queue, or active under the lease of a live worker);
- **completed_twice**: more than one `completed` event for one job. A job may *execute*
  twice where the scenario says so (its worker died, froze or was cut off); its outcome is
  still recorded once. The tests also assert that no job has two terminal events of any
  kind (e.g. `cancelled` and then `completed`).

Every scenario asserts lost = 0 and completed_twice = 0, plus what its row says. Timings:
`LEASE_TIMEOUT_SECONDS=2`, `HEARTBEAT_INTERVAL_SECONDS=0.3`, `REAPER_INTERVAL_SECONDS=0.2`,
`IDLE_POLL_SECONDS=1`. Durability: the chaos Redis runs with `appendfsync always`, so even
`kill -9` loses no acknowledged write; the hub's embedded Redis defaults to `everysec`, which
may lose about the last second of acknowledged submissions on a crash of the Redis host
(a clean stop loses nothing). In the Sentinel and cluster scenarios a killed primary's data is
gone with it: what survives is what a replica held. With `REDIS_WAIT_REPLICAS=1` nothing is
acknowledged before a replica holds it; with 0 (the default) a failover can lose what the
replicas had not received yet, which `sentinel_failover_without_wait` measures (not run in
CI: `EMP_CHAOS_MEASURE=1`).

Generated by `python -m scripts.reliability` from the tests in `tests/chaos/` (the "Does:"
and "Asserts:" paragraphs of each test's docstring; a test marked `xfail` is a known bug)
and from the lines a run prints. `python -m scripts.reliability --check` (run by
`tests/chaos/test_reliability_doc.py`) fails when this file and the tests disagree. Do not
edit it by hand; to refresh the measurements:

    EMP_CHAOS_REPORT=/tmp/chaos.txt .venv/bin/pytest tests/chaos -p no:cacheprovider
    .venv/bin/python -m scripts.reliability /tmp/chaos.txt

| Scenario | What it does | What it asserts | Last measured |
| --- | --- | --- | --- |
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").strip()


def _measured_cell(m: Measurement | None) -> str:
    if m is None:
        return "not measured yet"
    parts = [f"`{c}`" for c in (m.accounting, m.measured) if c]
    return "<br>".join([*parts, f"({m.when})"])


def render(
    scenarios: Sequence[Scenario],
    measurements: dict[str, Measurement],
    security: Security | None = None,
) -> str:
    rows = []
    bugs = []
    for s in scenarios:
        label = f"**{s.name}**<br>`{s.path}::test_{s.name}`"
        if s.known_bug is not None:
            label += "<br>**known bug** (xfail)"
            bugs.append(f"- **{s.name}**: {_cell(s.known_bug)}")
        cells = [label, _cell(s.does), _cell(s.asserts), _measured_cell(measurements.get(s.name))]
        rows.append("| " + " | ".join(cells) + " |")
    text = HEADER + "\n".join(rows) + "\n"
    if bugs:
        text += (
            "\n## Known bugs\n\n"
            "Scenarios marked `xfail` (strict) document a product bug: the test states the "
            "correct behaviour and fails until the bug is fixed (then `xfail` must go).\n\n"
            + "\n".join(bugs)
            + "\n"
        )
    return text + render_security(security or Security())


# -- commands ----------------------------------------------------------------------------


def check(doc: Path, tests_dir: Path = TESTS) -> list[str]:
    """Problems that make `doc` differ from what the tests say; empty when it is current."""
    scenarios = discover(tests_dir)
    if not doc.is_file():
        return [f"{doc} does not exist: run python -m scripts.reliability"]
    text = doc.read_text(encoding="utf-8")
    listed, measurements = parse_doc(text)
    names = [s.name for s in scenarios]
    problems = [f"{doc.name} lists '{n}', which has no test" for n in listed if n not in names]
    problems += [f"test '{n}' has no row in {doc.name}" for n in names if n not in listed]
    expected = render(scenarios, measurements, discover_security(tests_dir.parent))
    if expected != text:
        diff = difflib.unified_diff(
            text.splitlines(), expected.splitlines(), str(doc), "expected", lineterm="", n=0
        )
        problems.append(f"{doc.name} is out of date:\n" + "\n".join(diff))
    return problems


def write(doc: Path, runs: Sequence[Path], tests_dir: Path = TESTS) -> list[str]:
    """Rewrite `doc`; returns the scenarios whose measurement came from `runs`."""
    scenarios = discover(tests_dir)
    names = {s.name for s in scenarios}
    _, measurements = parse_doc(doc.read_text(encoding="utf-8")) if doc.is_file() else ([], {})
    measurements = {k: v for k, v in measurements.items() if k in names}
    updated: list[str] = []
    when = today()
    for run in runs:
        for name, m in parse_run(run.read_text(encoding="utf-8").splitlines(), when).items():
            if name not in names:
                raise ReliabilityError(f"{run}: measurement for unknown scenario '{name}'")
            measurements[name] = m
            updated.append(name)
    security = discover_security(tests_dir.parent)
    doc.write_text(render(scenarios, measurements, security), encoding="utf-8")
    return sorted(set(updated))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.reliability", description=__doc__)
    parser.add_argument("runs", nargs="*", type=Path, help="output of a chaos run to record")
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--doc", type=Path, default=DOC, help="default: RELIABILITY.md")
    parser.add_argument("--tests", type=Path, default=TESTS, help="default: tests/chaos")
    args = parser.parse_args(argv)
    try:
        if args.check:
            if args.runs:
                parser.error("--check takes no run output")
            problems = check(args.doc, args.tests)
            for problem in problems:
                print(f"reliability: {problem}", file=sys.stderr)
            if not problems:
                print(f"{args.doc.name} is up to date")
            return 1 if problems else 0
        updated = write(args.doc, args.runs, args.tests)
    except (ReliabilityError, OSError, SyntaxError) as exc:
        print(f"reliability: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.doc} ({', '.join(updated) or 'no new measurements'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
