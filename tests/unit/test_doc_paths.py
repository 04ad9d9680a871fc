"""Every repository path the documentation names exists: the docs follow the code.

Reads the Markdown files at the top level, in docs/ and in release/, leaving out fenced code
blocks (commands and their output, not references), and checks:

- inline code that names a path under a top-level folder (`shared/lua/include/keys.lua`,
  `worker/dashboard/`): it exists, or as a glob (`release/.env.*.example`) matches something;
- inline code that names a file by a shorter path or by its name alone (`include/keys.lua`,
  `keys.py`): some file in the repository ends that way;
- a test's node id (`tests/chaos/test_load.py::test_storm`): the file defines that test;
- links ([text](docs/ARCHITECTURE.md#the-claim)): the target exists, relative to the
  document, and an anchor into a Markdown file names one of its headings.

When a file moves, this names every document still pointing at the old place.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md"), *(ROOT / "release").glob("*.md")])
# The folders a path written from the repository root starts with.
TOP = ("bench", "docs", "hub", "release", "requirements", "scripts", "shared", "tests", "worker")
# A shorter path or a bare name is taken for a file of ours only with one of these endings
# (`application/json` and `worker.pyz` are not).
SOURCE_SUFFIXES = (".py", ".lua", ".md", ".html", ".js", ".css", ".toml", ".lock", ".service")
# What `python3 dev.py build` writes into release/: named by the docs, never committed.
BUILT = re.compile(r"release/(worker(-[\w.-]+)?\.pyz|SHA256SUMS)")

FENCE = re.compile(r"^ {0,3}```.*?^ {0,3}```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def prose(doc: Path) -> str:
    return FENCE.sub("", doc.read_text(encoding="utf-8"))


@cache
def repository_files() -> tuple[str, ...]:
    """Every file under the top-level folders and at the top, as a path from the root."""
    found = [p for p in ROOT.iterdir() if p.is_file()]
    for top in TOP:
        found += [p for p in (ROOT / top).rglob("*") if p.is_file()]
    return tuple(p.relative_to(ROOT).as_posix() for p in found if "__pycache__" not in p.parts)


def ends_some_path(suffix: str) -> bool:
    """Some file (or, for `name/`, some folder) of the repository ends with `suffix`."""
    if suffix.endswith("/"):
        return any(f"/{suffix}" in f"/{path}" for path in repository_files())
    return any(f"/{path}".endswith(f"/{suffix}") for path in repository_files())


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of `doc`: lower case, punctuation dropped, spaces
    as hyphens."""
    out = set()
    for heading in HEADING.findall(prose(doc)):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


def named_paths(doc: Path) -> list[str]:
    """The words of inline code that look like paths of this repository."""
    out = []
    for span in CODE.findall(prose(doc)):
        for word in span.split():
            word = word.strip(".,;:()'\"").removeprefix("./")
            if not word or "://" in word or word.startswith(("/", "~", "$", "-")):
                continue
            if any(c in word for c in "{}<>=|@"):
                continue  # a template (`job:{id}`, `worker-<n>.env`), not a path
            if from_the_root(word) or word.endswith(SOURCE_SUFFIXES):
                out.append(word)
    return out


def from_the_root(word: str) -> bool:
    return "/" in word and word.split("/", 1)[0] in TOP


def missing_path(word: str) -> bool:
    if BUILT.fullmatch(word):
        return False
    if "::" in word:  # a test's node id: its file, and the test in it
        file, _, node = word.partition("::")
        name = node.split("::")[-1].split("[")[0]
        path = ROOT / file
        return not path.is_file() or not re.search(rf"def {name}\b", path.read_text("utf-8"))
    if from_the_root(word):
        if "*" in word:
            return not any(ROOT.glob(word))
        return not (ROOT / word).exists()
    return not ends_some_path(word)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_path_named_in_inline_code_exists(doc: Path) -> None:
    missing = sorted({word for word in named_paths(doc) if missing_path(word)})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_link_into_the_repository_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {broken}"


def test_the_check_reads_the_documents_and_finds_their_paths() -> None:
    """The checks above pass vacuously if nothing is found: they are not."""
    names = {doc.relative_to(ROOT).as_posix() for doc in DOCS}
    assert {"README.md", "docs/ARCHITECTURE.md", "release/README.md"} <= names
    architecture = named_paths(ROOT / "docs" / "ARCHITECTURE.md")
    assert "shared/keys.py" in architecture
    assert "shared/lua/include/keys.lua" in architecture
    assert missing_path("shared/lua/lib.lua")
    assert missing_path("hardware_report.py")
    assert not missing_path("include/keys.lua")
    assert not missing_path("release/.env.*.example")
    assert not missing_path(
        "tests/unit/test_doc_paths.py::test_the_check_reads_the_documents_and_finds_their_paths"
    )
    assert missing_path("tests/unit/test_doc_paths.py::test_that_is_not_there")
    assert "the-claim" in anchors(ROOT / "docs" / "ARCHITECTURE.md")
