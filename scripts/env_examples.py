"""release/.env.hub.example and release/.env.worker.example, generated from the declarations.

    python -m scripts.env_examples          write both files
    python -m scripts.env_examples --check  fail (exit 1) if either differs from the declarations

Every setting is declared once (hub/settings.py, worker/settings.py, the built-in connectors,
shared/settings.py, shared/redis_settings.py); this renders each process's catalog, so the
example files cannot drift from what the code reads. It lives here rather than in shared/
because it needs both processes' catalogs, and shared/ imports neither.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from hub.settings import HUB_SETTINGS
from shared.env_example import render_example
from shared.setting_catalog import Catalog
from worker.settings import WORKER_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
CATALOGS: tuple[Catalog, ...] = (HUB_SETTINGS, WORKER_SETTINGS)


def example_path(catalog: Catalog, release: Path = ROOT / "release") -> Path:
    return release / f".env.{catalog.process}.example"


def stale_examples(release: Path = ROOT / "release") -> list[str]:
    """A unified diff per example file that differs from its rendering (none: all current)."""
    diffs: list[str] = []
    for catalog in CATALOGS:
        path = example_path(catalog, release)
        committed = path.read_text("utf-8") if path.is_file() else ""
        rendered = render_example(catalog)
        if committed != rendered:
            lines = difflib.unified_diff(
                committed.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                f"{path.name} (committed)",
                f"{path.name} (from the declarations)",
            )
            diffs.append("".join(lines))
    return diffs


def write_examples(release: Path = ROOT / "release") -> list[Path]:
    written = []
    for catalog in CATALOGS:
        path = example_path(catalog, release)
        path.write_text(render_example(catalog), "utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.env_examples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        diffs = stale_examples()
        for diff in diffs:
            sys.stdout.write(diff)
        if diffs:
            print("out of date: run `python -m scripts.env_examples`", file=sys.stderr)
            return 1
        return 0
    for path in write_examples():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
