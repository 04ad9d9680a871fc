"""requirements/dev.lock, which development and CI install, agrees with pyproject's ranges.

A dependency added to pyproject without `python3 dev.py lock` would be missing from every
fresh venv; a range tightened past the locked version would mean CI tests a release that
users can no longer get. Both fail here, naming the package.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "dev.lock"


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    listed = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return [Requirement(text) for text in listed]


def locked_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line[:1].isalnum():
            name, _, rest = line.split(";")[0].partition("==")
            pins[canonicalize_name(name)] = rest.split()[0]
    return pins


@pytest.mark.parametrize("requirement", pyproject_requirements(), ids=str)
def test_every_pyproject_requirement_is_locked_within_its_range(
    requirement: Requirement,
) -> None:
    pins = locked_pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement.name} is not in {LOCK.name}: run `python3 dev.py lock`"
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f"{LOCK.name} pins {requirement.name}=={pins[name]}, outside pyproject's "
        f"{requirement.specifier}: run `python3 dev.py lock`"
    )


def test_every_locked_release_carries_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    entries = text.split("\n")
    unhashed = [
        line.split()[0]
        for number, line in enumerate(entries)
        if line[:1].isalnum()
        and not (line.rstrip().endswith("\\") and "--hash=sha256:" in entries[number + 1])
    ]
    assert unhashed == [], f"pinned without a hash: {unhashed}"
