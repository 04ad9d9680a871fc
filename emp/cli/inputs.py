"""Turning `emp submit`'s flags into a submission: the payload, the workflow file and the
`--require KEY=VALUE` shorthand for the requirement document.

Anything wrong here is the user's input (exit code 2) and is said before anything is sent.
Whether a requirement exists at all is left to the hub, which refuses unknown fields and
names them, so the two can never disagree about the schema.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final


class UsageError(Exception):
    """Bad input on the command line (exit code 2)."""


# Short names for the requirement paths people type most (README, "Matching").
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "gpu": ("hardware", "gpu"),
    "cpu_cores": ("hardware", "cpu_cores"),
    "ram_gb": ("hardware", "ram_gb"),
    "region": ("geographic", "region"),
    "compliance": ("geographic", "compliance"),
    "quality": ("performance", "quality"),
    "max_per_hour": ("cost", "max_per_hour"),
    "isolation": ("customer_isolation",),
}
# Values that are numbers; everything else stays text (a compute capability such as 8.9
# is text to the hub, and a model name may look like a number).
NUMBERS: Final = frozenset({"memory_gb", "count", "cpu_cores", "ram_gb", "max_per_hour"})
# Values that are lists: comma-separated, and repeating the flag adds to them.
LISTS: Final = frozenset({("models",), ("geographic", "compliance")})


def read_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def read_file(path: str, what: str) -> str:
    """A file's text; `-` reads standard input."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc}") from None


def payload(text: str | None, workflow: str | None) -> dict[str, Any] | None:
    """`--payload JSON` (or `@file`), with `--workflow FILE` as its `workflow` field."""
    doc: dict[str, Any] | None = None
    if text is not None:
        source = read_file(text[1:], "--payload") if text.startswith("@") else text
        doc = read_json_object(source, "--payload")
    if workflow is not None:
        graph = read_json_object(read_file(workflow, "--workflow"), f"--workflow {workflow}")
        doc = {**(doc or {}), "workflow": graph}
    return doc


def requirements(items: Sequence[str]) -> dict[str, Any] | None:
    """`--require gpu.memory_gb=24 --require models=a.safetensors,b.pt` as a document."""
    doc: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise UsageError(f"--require {item!r}: expected KEY=VALUE, e.g. gpu.memory_gb=24")
        head, *rest = key.split(".")
        path = (*ALIASES.get(head, (head,)), *rest)
        _put(doc, path, _value(path, text, item), item)
    return doc or None


def _value(path: tuple[str, ...], text: str, item: str) -> Any:
    if path in LISTS:
        return [part.strip() for part in text.split(",") if part.strip()]
    if path[-1] in NUMBERS:
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"--require {item!r}: {path[-1]} must be a number") from None
        return int(number) if number.is_integer() else number
    return text


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any, item: str) -> None:
    node = doc
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--require {item!r}: {part} already has a value")
        node = child
    leaf = path[-1]
    if isinstance(value, list) and isinstance(node.get(leaf), list):
        node[leaf] = [*node[leaf], *value]
    elif leaf in node:
        raise UsageError(f"--require {item!r}: {'.'.join(path)} is given twice")
    else:
        node[leaf] = value


def deadline(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--deadline {text!r}: expected ISO-8601, e.g. 2026-01-01T12:00Z"
        ) from None
