"""RELIABILITY.md cannot drift from the chaos tests: `scripts.reliability --check` runs here,
and the script itself is checked on a throw-away test directory. Fast: starts nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.reliability import (
    DOC,
    ReliabilityError,
    check,
    discover,
    discover_security,
    main,
    parse_doc,
    parse_run,
    render,
    write,
)

SCENARIO = '''
import pytest


async def test_alpha(chaos) -> None:
    """Does: alpha things.

    Asserts: alpha holds."""


@pytest.mark.xfail(strict=True, reason="product bug: beta breaks")
async def test_beta(chaos) -> None:
    """Does: beta
    things.

    Asserts: beta holds."""
'''
RUN = """\
..ACCOUNTING alpha: submitted=3 completed=3 failed=0 cancelled=0 lost=0 completed_twice=0
MEASURED alpha: duration_s=1.00 kills=1
ACCOUNTING alpha: submitted=4 completed=4 failed=0 cancelled=0 lost=0 completed_twice=0
"""


def make_tests(tmp_path: Path, source: str = SCENARIO) -> Path:
    tests = tmp_path / "chaos"
    tests.mkdir(exist_ok=True)
    (tests / "test_matrix.py").write_text(source)
    (tests / "test_reliability_doc.py").write_text("def test_not_a_scenario() -> None: ...\n")
    return tests


def test_reliability_md_matches_the_chaos_tests() -> None:
    problems = check(DOC)
    assert not problems, "\n".join(problems) + "\nregenerate: python -m scripts.reliability"


def test_discover_reads_docstrings_and_xfail_reasons(tmp_path: Path) -> None:
    alpha, beta = discover(make_tests(tmp_path))
    assert (alpha.name, alpha.does, alpha.asserts, alpha.known_bug) == (
        "alpha",
        "alpha things.",
        "alpha holds.",
        None,
    )
    assert (beta.name, beta.does, beta.known_bug) == (
        "beta",
        "beta things.",
        "product bug: beta breaks",
    )


def test_the_issue_scenarios_come_first_in_the_issue_order(tmp_path: Path) -> None:
    tests = make_tests(tmp_path)
    for name, source in [
        ("test_b_load.py", SCENARIO.replace("alpha", "storm").split("@pytest")[0]),
        ("test_a_faults.py", SCENARIO.replace("alpha", "partition").replace("beta", "kill9")),
    ]:
        (tests / name).write_text(source)
    assert [s.name for s in discover(tests)] == ["kill9", "partition", "storm", "alpha", "beta"]


def test_the_last_lines_of_a_run_win_and_round_trip_through_the_doc(tmp_path: Path) -> None:
    measured = parse_run(RUN.splitlines(), "measured 2026-01-01, 2 CPUs")
    assert measured["alpha"].accounting is not None
    assert "submitted=4" in measured["alpha"].accounting
    assert measured["alpha"].measured == "MEASURED alpha: duration_s=1.00 kills=1"
    text = render(discover(make_tests(tmp_path)), measured)
    listed, parsed = parse_doc(text)
    assert listed == ["alpha", "beta"]
    assert parsed == measured
    assert "not measured yet" in text
    assert "product bug: beta breaks" in text


def test_check_fails_on_any_drift(tmp_path: Path) -> None:
    tests = make_tests(tmp_path)
    doc = tmp_path / "RELIABILITY.md"
    assert check(doc, tests) == [f"{doc} does not exist: run python -m scripts.reliability"]
    run = tmp_path / "run.txt"
    run.write_text(RUN)
    assert write(doc, [run], tests) == ["alpha"]
    assert check(doc, tests) == []

    make_tests(tmp_path, SCENARIO.replace("alpha holds.", "alpha holds firmly."))
    problems = check(doc, tests)
    assert len(problems) == 1
    assert "out of date" in problems[0]

    make_tests(tmp_path, SCENARIO + SCENARIO.replace("alpha", "gamma").split("@pytest")[0])
    assert "test 'gamma' has no row in RELIABILITY.md" in check(doc, tests)

    write(doc, [], tests)  # the rewrite keeps alpha's measurement
    assert "submitted=4" in doc.read_text()
    make_tests(tmp_path, SCENARIO.replace("test_beta", "test_delta"))
    assert "RELIABILITY.md lists 'beta', which has no test" in check(doc, tests)


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    tests = make_tests(tmp_path)
    doc = tmp_path / "RELIABILITY.md"
    assert main(["--check", "--doc", str(doc), "--tests", str(tests)]) == 1
    assert main(["--doc", str(doc), "--tests", str(tests)]) == 0
    assert main(["--check", "--doc", str(doc), "--tests", str(tests)]) == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("MEASURED nosuch: x=1\n")
    assert main([str(bad), "--doc", str(doc), "--tests", str(tests)]) == 2
    make_tests(tmp_path, 'async def test_undocumented(chaos) -> None:\n    """Just words."""\n')
    assert main(["--check", "--doc", str(doc), "--tests", str(tests)]) == 2


SECURITY = '''"""Hostile things, refused.

More words."""


async def test_gamma() -> None:
    """Attack: send a | pipe. Refused: a 400,
    naming it.

    Asserts: unrelated."""


async def test_not_an_attack() -> None:
    """Just a test."""
'''


def test_the_security_section_lists_attack_classes_and_attacks(tmp_path: Path) -> None:
    tests = make_tests(tmp_path)
    (tmp_path / "test_security_gamma.py").write_text(SECURITY)
    (tmp_path / "test_other.py").write_text(SECURITY.replace("Refused: a 400", "It is refused"))
    with pytest.raises(ReliabilityError, match="needs a 'Refused:'"):
        discover_security(tmp_path)
    (tmp_path / "test_other.py").unlink()
    security = discover_security(tmp_path)
    assert [c.summary for c in security.classes] == ["Hostile things, refused."]
    [attack] = security.attacks
    assert (attack.test, attack.attack, attack.refused) == (
        "test_gamma",
        "send a | pipe.",
        "a 400, naming it.",
    )
    doc = tmp_path / "RELIABILITY.md"
    write(doc, [], tests)
    text = doc.read_text()
    assert "## Security: attacks tried and refused" in text
    assert "| send a \\| pipe. | a 400, naming it. |" in text
    assert check(doc, tests) == []
    (tmp_path / "test_security_gamma.py").write_text(SECURITY.replace("a 400", "a 422"))
    problems = check(doc, tests)
    assert len(problems) == 1
    assert "out of date" in problems[0]
