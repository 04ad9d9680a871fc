#!/usr/bin/env python3
"""One entry point for developers and CI; needs only the standard library and Python 3.11+.

    python3 dev.py setup              create .venv and install the project with its dev tools
    python3 dev.py test [PYTEST ARGS] setup, lint (ruff, ruff format --check, mypy), then pytest
    python3 dev.py run [ARGS]         setup, then run the demo: hub + embedded Redis + 3 workers
    python3 dev.py lint               ruff check + ruff format --check + mypy
    python3 dev.py fmt                ruff format + ruff check --fix

Environment: EMP_ALLOW_NO_TESTS=1 makes "pytest collected no tests" (exit 5) count as success.
Before pytest, `test` installs Debian's chromium for the browser tests when it is missing and
this is root on Debian (best effort: the browser tests skip, saying why, if it cannot). Setting
EMP_BROWSER (a Chromium to use instead) or EMP_NO_BROWSER_INSTALL=1 turns that off.
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
PYPROJECT = ROOT / "pyproject.toml"
STAMP = VENV / ".emp-dev-stamp"
MIN_PYTHON = (3, 11)
PYTEST_NO_TESTS = 5
BROWSER = Path("/usr/bin/chromium")  # Debian's package; tests/browser_support.py drives it
APT_TIMEOUTS = {"update": 300, "install": 900}  # seconds


def say(message: str) -> None:
    """Tell the user what is happening (stdout, flushed so it interleaves with tool output)."""
    print(f"[dev] {message}", flush=True)


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def run(args: Sequence[str | Path]) -> int:
    """Run one command from the repository root, echoing it first; return its exit code."""
    argv = [str(a) for a in args]
    shown = " ".join(argv).replace(str(ROOT) + os.sep, "")
    say(f"$ {shown}")
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def check(args: Sequence[str | Path]) -> None:
    code = run(args)
    if code != 0:
        say(f"failed with exit code {code}")
        raise SystemExit(code)


def pyproject_digest() -> str:
    return hashlib.sha256(PYPROJECT.read_bytes()).hexdigest()


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


def setup() -> Path:
    """Ensure .venv exists and holds the project with its dev extra; return the venv python."""
    python = venv_python()
    if not venv_works(python):
        if VENV.exists():
            say(f"{VENV.name} is broken or too old; recreating it")
        else:
            say(f"creating {VENV.name} with {sys.executable}")
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
        STAMP.unlink(missing_ok=True)

    digest = pyproject_digest()
    if STAMP.exists() and STAMP.read_text(encoding="utf-8").strip() == digest:
        say(f"{VENV.name} matches pyproject.toml; skipping install (delete {STAMP} to force it)")
        return python

    say('installing the project and its dev tools: pip install -e ".[dev]"')
    check([python, "-m", "pip", "install", "--disable-pip-version-check", "-e", ".[dev]"])
    STAMP.write_text(digest + "\n", encoding="utf-8")
    say("setup done")
    return python


def lint_steps(python: Path) -> None:
    check([python, "-m", "ruff", "check", "."])
    check([python, "-m", "ruff", "format", "--check", "."])
    check([python, "-m", "mypy"])


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
    python = setup()
    lint_steps(python)
    ensure_browser()
    code = run([python, "-m", "pytest", *args])
    if code == PYTEST_NO_TESTS:
        if os.environ.get("EMP_ALLOW_NO_TESTS") == "1":
            say("pytest collected no tests; allowed because EMP_ALLOW_NO_TESTS=1")
            return 0
        say("pytest collected no tests: failing (set EMP_ALLOW_NO_TESTS=1 to allow)")
        return code
    if code != 0:
        say(f"pytest failed with exit code {code}")
    return code


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
