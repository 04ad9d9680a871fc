#!/usr/bin/env python3
"""One entry point for developers and CI; needs only the standard library and Python 3.11+.

    python3 dev.py setup              create .venv from the lock (requirements/dev.lock)
    python3 dev.py test [PYTEST ARGS] setup, lint (ruff, ruff format --check, mypy), then pytest
                                      with coverage (the total is printed, never gated on)
    python3 dev.py test --latest [..] the same in a throwaway .venv-latest holding the newest
                                      releases that pyproject's ranges allow (not run in CI)
    python3 dev.py run [ARGS]         setup, then run the demo: hub + embedded Redis + 3 workers
    python3 dev.py build [ARGS]       setup, then build.py: release/worker.pyz (--all: the matrix)
    python3 dev.py wheelhouse [ARGS]  setup, then fill build/wheelhouse/ with the hub image's
                                      locked wheels (--python X.Y: the base image's Python), so
                                      `docker build -f Containerfile .` needs no PyPI
    python3 dev.py lock [UV ARGS]     regenerate requirements/dev.lock with uv, keeping the pins
                                      it can (--upgrade: the newest releases the ranges allow)
    python3 dev.py lint               ruff check + ruff format --check + mypy
    python3 dev.py fmt                ruff format + ruff check --fix

Every install comes from the lock, with hashes, so a new release of a dependency cannot change
what CI runs; pyproject keeps ranges for people who install the hub or worker themselves.
When the lock or pyproject changes, .venv is rebuilt from scratch.

pytest runs in two processes (pytest-xdist, a file whole in one); EMP_TEST_PROCESSES=N sets
how many (0: pytest's own process alone), as does passing -n yourself.

Environment: EMP_ALLOW_NO_TESTS=1 makes "pytest collected no tests" (exit 5) count as success.
Before pytest, `test` installs Debian's chromium for the browser tests when it is missing and
this is root on Debian (best effort: the browser tests skip, saying why, if it cannot). Setting
EMP_BROWSER (a Chromium to use instead) or EMP_NO_BROWSER_INSTALL=1 turns that off. In the
same way it installs podman, runc, debootstrap and podman-compose for the container tests
(tests/e2e/test_container.py build the hub image, run it, and run compose.yaml);
EMP_NO_CONTAINER_INSTALL=1 turns that off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
LATEST_VENV = ROOT / ".venv-latest"
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "dev.lock"
STAMP_NAME = ".emp-dev-stamp"
# The lock is resolved once for every platform and Python the project supports (uv's universal
# mode), from the lowest Python it supports, with a hash for every file of every pinned release.
LOCK_COMMAND = [
    "pip", "compile", "pyproject.toml", "--extra", "dev", "--universal", "--python-version",
    "3.11", "--generate-hashes", "--custom-compile-command", "python3 dev.py lock",
]  # fmt: skip
MIN_PYTHON = (3, 11)
PYTEST_NO_TESTS = 5
BROWSER = Path("/usr/bin/chromium")  # Debian's package; tests/browser_support.py drives it
# Debian's packages for tests/container_support.py: the engine and the runtime it is run with,
# debootstrap for the base image (no registry is reachable), and what rootful podman needs;
# podman-compose and the CNI plugin that gives podman's networks DNS (podman 4.3's default
# backend on Debian 12) for the compose.yaml test.
CONTAINER_PACKAGES = (
    "podman", "runc", "debootstrap", "uidmap", "slirp4netns", "fuse-overlayfs", "podman-compose",
    "golang-github-containernetworking-plugin-dnsname",
)  # fmt: skip
BASE_TOOLS = ("podman", "runc", "debootstrap")
CONTAINER_TOOLS = (*BASE_TOOLS, "podman-compose")
APT_TIMEOUTS = {"update": 300, "install": 900}  # seconds


def say(message: str) -> None:
    """Tell the user what is happening (stdout, flushed so it interleaves with tool output)."""
    print(f"[dev] {message}", flush=True)


def venv_python(venv_dir: Path = VENV) -> Path:
    if os.name == "nt":
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"


def run(args: Sequence[str | Path], env: dict[str, str] | None = None) -> int:
    """Run one command from the repository root, echoing it first; return its exit code."""
    argv = [str(a) for a in args]
    shown = " ".join(argv).replace(str(ROOT) + os.sep, "")
    say(f"$ {shown}")
    return subprocess.run(argv, cwd=ROOT, check=False, env=env).returncode


def check(args: Sequence[str | Path], env: dict[str, str] | None = None) -> None:
    code = run(args, env)
    if code != 0:
        say(f"failed with exit code {code}")
        raise SystemExit(code)


def inputs_digest() -> str:
    """What the venv was built from: the lock, and pyproject (entry points, package data)."""
    digest = hashlib.sha256()
    for path in (LOCK, PYPROJECT):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def venv_works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return probe.returncode == 0


def fresh_venv(venv_dir: Path, why: str) -> Path:
    say(f"{why}: creating {venv_dir.name} with {sys.executable}")
    venv.EnvBuilder(with_pip=True, clear=venv_dir.exists()).create(venv_dir)
    return venv_python(venv_dir)


def pip(python: Path, *args: str | Path) -> list[str | Path]:
    return [python, "-m", "pip", "--disable-pip-version-check", *args]


def setup() -> Path:
    """Ensure .venv holds exactly the lock plus the project (editable); return its python.

    A changed lock or pyproject rebuilds the venv from nothing, so a package that left the
    lock leaves the venv too."""
    if not LOCK.exists():
        say(f"{LOCK.relative_to(ROOT)} is missing: run `python3 dev.py lock` (needs network)")
        raise SystemExit(2)
    stamp = VENV / STAMP_NAME
    python = venv_python()
    digest = inputs_digest()
    if venv_works(python) and stamp.exists():
        if stamp.read_text(encoding="utf-8").strip() == digest:
            say(f"{VENV.name} matches the lock; skipping install (delete {stamp} to force it)")
            return python
        python = fresh_venv(VENV, "the lock or pyproject.toml changed")
    else:
        python = fresh_venv(VENV, "no usable venv" if not VENV.exists() else "venv incomplete")

    say(f"installing from {LOCK.relative_to(ROOT)} (exact versions, hashes checked)")
    check(pip(python, "install", "--require-hashes", "--no-deps", "-r", LOCK))
    # The lock holds setuptools, so the editable build uses the locked one, not whatever
    # release build isolation would fetch today.
    check(pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "-e", "."))
    check(pip(python, "check"))
    stamp.write_text(digest + "\n", encoding="utf-8")
    say("setup done")
    return python


def setup_latest() -> Path:
    """A throwaway venv with the newest releases pyproject's ranges allow, for trying a bump."""
    python = fresh_venv(LATEST_VENV, "--latest")
    say('installing the newest releases the ranges allow: pip install -e ".[dev]"')
    check(pip(python, "install", "--upgrade", "pip"))
    check(pip(python, "install", "-e", ".[dev]"))
    return python


def locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name, _, rest = line.partition("==")
            pins[normalise(name)] = rest.split()[0].split(";")[0]
    return pins


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def report_drift(python: Path) -> None:
    """Say which installed versions differ from the lock: what `dev.py lock --upgrade` moves."""
    frozen = subprocess.run(
        pip(python, "list", "--format=freeze", "--exclude-editable"),
        cwd=ROOT, check=True, text=True, capture_output=True,
    ).stdout  # fmt: skip
    pins = locked_versions()
    drift = []
    for line in frozen.splitlines():
        name, _, version = line.partition("==")
        locked = pins.get(normalise(name))
        if locked is not None and locked != version:
            drift.append(f"{name} {locked} -> {version}")
        elif locked is None and normalise(name) not in {"pip", "setuptools"}:
            drift.append(f"{name} {version} (not in the lock)")
    if drift:
        say("newer than the lock: " + ", ".join(drift))
    else:
        say("the lock already holds the newest releases")


LINTERS = (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"])


def lint_steps(python: Path) -> None:
    for linter in LINTERS:
        check([python, "-m", *linter])


def apt_get(args: list[str], timeout: int) -> bool:
    """Run apt-get quietly; on failure say why (the tail of its output) and return False."""
    argv = ["apt-get", "-qq", *args]
    say(f"$ {' '.join(argv)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            argv, env=env, check=False, timeout=timeout, text=True, errors="replace",
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        say(f"apt-get {args[0]} took more than {timeout} s; gave up")
        return False
    except OSError as exc:
        say(f"apt-get {args[0]} could not run: {exc}")
        return False
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-5:])
        say(f"apt-get {args[0]} failed with exit code {done.returncode}:\n{tail}")
        return False
    return True


def ensure_browser() -> None:
    """Best effort: install Debian's chromium for the browser tests. Never fails the command;
    without a browser those tests skip and say why."""
    if os.environ.get("EMP_BROWSER") or os.environ.get("EMP_NO_BROWSER_INSTALL") == "1":
        return
    if BROWSER.exists() or not sys.platform.startswith("linux"):
        return
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        say(f"no {BROWSER} and no apt-get here: the browser tests will skip")
        return
    if os.geteuid() != 0:
        say(f"no {BROWSER}; run `apt-get install chromium` as root: the browser tests will skip")
        return
    say(f"no {BROWSER}: installing Debian's chromium for the browser tests")
    if apt_get(["update"], APT_TIMEOUTS["update"]) and apt_get(
        ["install", "-y", "--no-install-recommends", "chromium"], APT_TIMEOUTS["install"]
    ):
        say(f"installed {BROWSER}" if BROWSER.exists() else f"installed, yet no {BROWSER}")
    else:
        say("could not install chromium: the browser tests will skip")


def ensure_container_tools() -> None:
    """Best effort, as ensure_browser: Debian's podman, runc, debootstrap and podman-compose
    (CONTAINER_PACKAGES) for the container tests, which skip and say why without them."""
    if os.environ.get("EMP_NO_CONTAINER_INSTALL") == "1" or not sys.platform.startswith("linux"):
        return
    missing = [tool for tool in CONTAINER_TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        say(f"no {', '.join(missing)} and no apt-get here: the container tests will skip")
        return
    if os.geteuid() != 0:
        say(f"no {', '.join(missing)}; the container tests need root and will skip")
        return
    say(f"no {', '.join(missing)}: installing Debian's packages for the container tests")
    if apt_get(["update"], APT_TIMEOUTS["update"]) and apt_get(
        ["install", "-y", "--no-install-recommends", *CONTAINER_PACKAGES], APT_TIMEOUTS["install"]
    ):
        say("installed " + " ".join(CONTAINER_PACKAGES))
    else:
        say("could not install podman: the container tests will skip")


def start_container_base(python: Path) -> subprocess.Popen[bytes] | None:
    """Start making the container tests' Debian images, the base and Redis (debootstrap: a
    minute or two each on a fresh machine, mostly waiting on the mirror) while lint runs; the
    tests wait for them. None where the container tests will skip anyway."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    if any(shutil.which(tool) is None for tool in BASE_TOOLS):
        return None
    (ROOT / "build").mkdir(exist_ok=True)
    log = (ROOT / "build" / "container-base.log").open("wb")
    say("making the container tests' images in the background (build/container-base.log)")
    return subprocess.Popen(
        [str(python), "-m", "tests.container_support", "base", "redis"], cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def cmd_setup(args: list[str]) -> int:
    setup()
    return 0


def cmd_lint(args: list[str]) -> int:
    lint_steps(setup())
    return 0


def cmd_fmt(args: list[str]) -> int:
    python = setup()
    check([python, "-m", "ruff", "format", "."])
    check([python, "-m", "ruff", "check", "--fix", "."])
    return 0


def cmd_test(args: list[str]) -> int:
    if args[:1] == ["--latest"]:
        return test_latest(args[1:])
    python = setup()
    ensure_container_tools()
    base = start_container_base(python)
    lint_steps(python)
    ensure_browser()
    code = run([python, "-m", "pytest", *COVERAGE, *parallel(args), *args])
    if base is not None and base.poll() is None:
        base.terminate()  # pytest did not need it (the container tests were deselected)
        base.wait()
    report_coverage(python)
    return pytest_outcome(code)


def test_latest(args: list[str]) -> int:
    """Everything `test` runs, in .venv-latest; every step runs even when one fails, so one
    run tells all that a bump of the lock would break."""
    python = setup_latest()
    report_drift(python)
    # Caches written by the locked tool versions must not answer for these ones.
    caches = LATEST_VENV / "caches"
    env = {**os.environ, "MYPY_CACHE_DIR": str(caches / "mypy")}
    env["RUFF_CACHE_DIR"] = str(caches / "ruff")
    failed = [" ".join(step) for step in LINTERS if run([python, "-m", *step], env) != 0]
    ensure_browser()
    ensure_container_tools()
    code = pytest_outcome(run([python, "-m", "pytest", *COVERAGE, *parallel(args), *args], env))
    report_coverage(python, env)
    report_drift(python)
    if code != 0:
        failed.append("pytest")
    say("--latest: " + (f"FAILED: {', '.join(failed)}" if failed else "all green"))
    return 1 if failed else 0


# Test processes (pytest-xdist) unless EMP_TEST_PROCESSES says otherwise (0: one, in pytest's
# own process). Two is what the suite is checked with in CI, on 2 cores: most of its time is
# spent waiting on real servers and processes, which two processes overlap. Each file runs
# whole in one process (--dist loadfile): its fixtures and its tests' order stay as written.
TEST_PROCESSES = "2"


def parallel(args: list[str]) -> list[str]:
    """pytest-xdist's arguments, unless the caller chose (-n / --numprocesses / -p no:xdist)."""
    if any(arg.startswith(("-n", "--numprocesses")) or arg == "no:xdist" for arg in args):
        return []
    return ["-n", os.environ.get("EMP_TEST_PROCESSES", TEST_PROCESSES), "--dist", "loadfile"]


def pytest_outcome(code: int) -> int:
    if code == PYTEST_NO_TESTS:
        if os.environ.get("EMP_ALLOW_NO_TESTS") == "1":
            say("pytest collected no tests; allowed because EMP_ALLOW_NO_TESTS=1")
            return 0
        say("pytest collected no tests: failing (set EMP_ALLOW_NO_TESTS=1 to allow)")
        return code
    if code != 0:
        say(f"pytest failed with exit code {code}")
    return code


# Coverage of the product packages in the pytest process (hubs and workers that tests start as
# processes are not measured). The total is printed; nothing gates on it.
COVERAGE = ("--cov", "--cov-report=")


def report_coverage(python: Path, env: dict[str, str] | None = None) -> None:
    total = subprocess.run(
        [python, "-m", "coverage", "report", "--format=total", "--precision=1"],
        cwd=ROOT, check=False, text=True, capture_output=True, env=env,
    )  # fmt: skip
    if total.returncode == 0:
        say(f"line and branch coverage of shared/, hub/, worker/, emp/: {total.stdout.strip()}%")
    else:
        say(f"no coverage total: {(total.stderr or total.stdout).strip()}")


def cmd_build(args: list[str]) -> int:
    """build.py with the dev environment; the pyz gets the locked versions of its packages."""
    python = setup()
    pins: list[str | Path] = ["--constraint", LOCK]
    if any(arg.startswith("--constraint") for arg in args):
        pins = []
    check([python, "build.py", *pins, *args])
    return 0


def cmd_wheelhouse(args: list[str]) -> int:
    """scripts/wheelhouse.py with the dev environment, pinned to the dev lock."""
    python = setup()
    check([python, "-m", "scripts.wheelhouse", "--constraint", LOCK, *args])
    return 0


def cmd_lock(args: list[str]) -> int:
    python = setup() if LOCK.exists() else fresh_venv(VENV, "no lock yet")
    if not LOCK.exists():  # the first lock: uv comes from PyPI, unpinned, this once
        check(pip(python, "install", "uv"))
    before = LOCK.read_bytes() if LOCK.exists() else b""
    check([python, "-m", "uv", *LOCK_COMMAND, "-o", LOCK.relative_to(ROOT), *args])
    if LOCK.read_bytes() == before:
        say(f"{LOCK.relative_to(ROOT)} is unchanged")
    else:
        say(f"wrote {LOCK.relative_to(ROOT)}; the next command rebuilds {VENV.name} from it")
    return 0


def cmd_run(args: list[str]) -> int:
    python = setup()
    argv = [str(python), "-m", "scripts.demo", *args]
    say(f"$ {' '.join(argv)}")
    if os.name == "nt":  # os.exec* on Windows does not replace the process; wait instead.
        return subprocess.run(argv, cwd=ROOT, check=False).returncode
    os.chdir(ROOT)
    os.execv(argv[0], argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "setup": cmd_setup,
    "test": cmd_test,
    "run": cmd_run,
    "build": cmd_build,
    "wheelhouse": cmd_wheelhouse,
    "lock": cmd_lock,
    "lint": cmd_lint,
    "fmt": cmd_fmt,
}


def main(argv: list[str]) -> int:
    if sys.version_info < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        say(f"Python {wanted}+ is required; this is {sys.version.split()[0]} ({sys.executable})")
        return 2
    if not argv or argv[0] in {"-h", "--help", "help"} or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in {"-h", "--help", "help"} else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
