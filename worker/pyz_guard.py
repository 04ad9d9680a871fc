"""Start-up check and housekeeping for worker.pyz; standard library only.

build.py bakes a small shiv preamble into every pyz. shiv runs it after extracting the pyz's
site-packages and before the worker's entry point; the preamble loads this file by path
(not through the `worker` package, so nothing compiled is imported before the check) and
calls `main`, which:

1. Compares the running interpreter with the build. A pyz carries compiled wheels for one
   OS, CPU and CPython minor (orjson, msgspec, hiredis and markupsafe are built per minor),
   so anything else prints one line naming the build to download and exits 2, instead of an
   ImportError from deep inside a `.so`. A mismatched run removes its own extraction again.
2. Holds a shared lock on its own extraction for the life of the process, and removes the
   extractions of the same pyz file name with another build id that no process holds: shiv
   extracts every build to `<SHIV_ROOT or ~/.shiv>/<file name>_<build id>` and never
   deletes any, so each upgrade would otherwise leave its predecessor on disk. An
   extraction is renamed aside under its locks before it is deleted, so a run starting at
   that moment re-extracts instead of finding half a directory.
3. Sets EMP_BUILD_TAG, which `worker --version` and `worker detect` report.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import struct
import sys
import sysconfig
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

try:
    import fcntl
except ImportError:  # Windows: no flock, so no locking and no clean-up
    fcntl = None  # type: ignore[assignment]

EXIT_WRONG_BUILD = 2
EXIT_RETRY = 75  # EX_TEMPFAIL: run again (the extraction vanished and could not be redone)
IN_USE = ".emp-in-use"
BUILD_ID = re.compile(r"[0-9a-f]{64}")
_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "aarch64_be": "aarch64"}
_32_BIT = {"x86_64": "i686", "aarch64": "armv7l"}
_OS_NAMES = {"linux": "linux", "darwin": "macos", "win32": "windows", "cygwin": "windows"}


class Interpreter(NamedTuple):
    """What a build must match: the running Python and the machine under it."""

    implementation: str
    version: tuple[int, int]
    os: str
    machine: str
    glibc: tuple[int, int] | None
    free_threaded: bool = False

    @property
    def tag(self) -> str:
        """The build tag that fits this interpreter, e.g. linux-x86_64-cp311."""
        return f"{self.os}-{self.machine}-cp{self.version[0]}{self.version[1]}"


def os_name(sys_platform: str | None = None) -> str:
    value = sys.platform if sys_platform is None else sys_platform
    return _OS_NAMES.get(value, value)


def machine_name(machine: str | None = None, pointer_bytes: int | None = None) -> str:
    """platform.machine() the way wheel tags spell it; a 32-bit Python on a 64-bit kernel
    counts as 32-bit, since that is what its extension modules must be built for."""
    value = (platform.machine() if machine is None else machine).lower() or "unknown"
    value = _MACHINES.get(value, value)
    if (struct.calcsize("P") if pointer_bytes is None else pointer_bytes) == 4:
        value = _32_BIT.get(value, value)
    return value


def glibc_version() -> tuple[int, int] | None:
    """The C library's version where it is glibc; None for musl, macOS and Windows."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", text)
    return (int(match[1]), int(match[2])) if match else None


def running() -> Interpreter:
    return Interpreter(
        implementation=platform.python_implementation(),
        version=(sys.version_info[0], sys.version_info[1]),
        os=os_name(),
        machine=machine_name(),
        glibc=glibc_version(),
        free_threaded=bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    )


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def mismatch(build: Mapping[str, Any], here: Interpreter, file_name: str) -> str | None:
    """One line saying why this pyz cannot run here and what to run instead, or None."""
    python = str(build["python"])
    same_python = (
        here.implementation == "CPython"
        and here.version == _version(python)
        and not here.free_threaded
    )
    same_platform = (here.os, here.machine) == (build["os"], build["machine"])
    need = str(build.get("glibc") or "")
    glibc_ok = not need or (here.glibc is not None and here.glibc >= _version(need))
    if same_python and same_platform and glibc_ok:
        return None
    name = str(build["name"])
    shown = file_name if file_name == name else f"{file_name} ({name})"
    built = f"CPython {python} on {build['os']} {build['machine']}"
    kind = " free-threaded" if here.free_threaded else ""
    this = (
        f"{here.implementation} {here.version[0]}.{here.version[1]}{kind} "
        f"on {here.os} {here.machine}"
    )
    if same_python and same_platform:  # only the C library is too old (or not glibc)
        built += f" with glibc >= {need}"
        this += (
            f" with glibc {here.glibc[0]}.{here.glibc[1]}"
            if here.glibc
            else " without glibc (musl?)"
        )
        advice = "use a Linux with a newer glibc, or install emp-redis from source with pip"
        return f"{shown} was built for {built}; this is {this}: {advice}"
    supported = [str(tag) for tag in build.get("supported", ())]
    if here.implementation == "CPython" and not here.free_threaded and here.tag in supported:
        advice = f"download worker-{here.tag}.pyz"
    else:
        prefix = f"{here.os}-{here.machine}-cp"
        pythons = [t.removeprefix(prefix) for t in supported if t.startswith(prefix)]
        versions = ", ".join(f"{p[0]}.{p[1:]}" for p in pythons)
        advice = "no build exists for it" + (f"; use CPython {versions}" if versions else "")
    if same_platform and not same_python:
        advice += f" (or run this file with python{python})"
    return f"{shown} was built for {built}; this is {this}: {advice}"


def _try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking flock on `path` (created if needed), or None if it is held
    elsewhere or cannot be opened."""
    assert fcntl is not None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def hold(extraction: Path) -> int:
    """A shared lock on `extraction` for the life of the process: while any run holds it, no
    clean-up removes the directory. Raises FileNotFoundError if the directory is gone or was
    renamed aside while we waited."""
    assert fcntl is not None
    path = extraction / IN_USE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:  # another user's extraction: a lock on a read-only open still works
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # a cleaner holds LOCK_EX only for one rename
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            raise FileNotFoundError(str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_extraction(root: Path, name: str, build_id: str) -> bool:
    """Remove `<root>/<name>_<build_id>` (and a crashed `.tmp` extraction of it) unless a
    process holds it or shiv is extracting it. True if nothing of it is left."""
    base = f"{name}_{build_id}"
    target = root / base
    extract_lock = root / f".{base}_lock"  # shiv holds this while extracting
    lock_fd = _try_lock(extract_lock)
    if lock_fd is None:
        return False
    try:
        if target.is_dir():
            use_fd = _try_lock(target / IN_USE)
            if use_fd is None:
                return False  # a run of that build is still going
            trash = root / f".{base}.trash-{os.getpid()}"
            try:
                os.rename(target, trash)
            finally:
                os.close(use_fd)
            shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(root / f"{base}.tmp", ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(extract_lock)
        return not target.exists()
    finally:
        os.close(lock_fd)


def remove_old_extractions(root: Path, name: str, current_id: str) -> list[str]:
    """Remove every extraction of pyz file `name` under `root` except build `current_id`
    and those in use. Returns the build ids removed."""
    try:
        entries = sorted(entry.name for entry in os.scandir(root))
    except OSError:
        return []
    removed: list[str] = []
    prefix = f"{name}_"
    for entry in entries:
        if entry.startswith(f".{prefix}") and ".trash-" in entry:
            shutil.rmtree(root / entry, ignore_errors=True)  # left by an interrupted clean-up
            continue
        if not entry.startswith(prefix):
            continue
        build_id, _, suffix = entry[len(prefix) :].partition(".")
        if suffix not in ("", "tmp") or build_id == current_id or not BUILD_ID.fullmatch(build_id):
            continue
        if build_id not in removed and remove_extraction(root, name, build_id):
            removed.append(build_id)
    return removed


def hold_own_extraction(archive: str, site_packages: Path) -> int | None:
    """Lock this run's extraction (re-extracting it if a clean-up moved it away meanwhile) and
    return the lock's descriptor, which stays open until the process exits. None where it
    cannot be locked, e.g. read-only: the run goes on, but cleans up nothing."""
    extraction = site_packages.parent
    for _ in range(3):
        try:
            return hold(extraction)
        except FileNotFoundError:
            if not site_packages.is_dir():
                try:
                    _reextract(archive, extraction)
                except Exception as exc:
                    print(
                        f"emp-worker: {extraction} vanished and cannot be extracted again "
                        f"({exc}); run again",
                        file=sys.stderr,
                        flush=True,
                    )
                    raise SystemExit(EXIT_RETRY) from None
        except OSError:
            return None
    return None


def _reextract(archive: str, extraction: Path) -> None:
    """Extract this pyz again with shiv's own code (another run removed our copy)."""
    bootstrap = sys.modules.get("_bootstrap")
    if bootstrap is None:
        raise FileNotFoundError(str(extraction))
    with zipfile.ZipFile(archive) as zf:
        bootstrap.extract_site_packages(zf, extraction)


def main(build: Mapping[str, Any], archive: str, site_packages: Path, build_id: str) -> None:
    """Called by the preamble with shiv's `archive` and `site_packages` and the build id."""
    extraction = Path(site_packages).parent
    root = extraction.parent
    suffix = f"_{build_id}"
    name = extraction.name[: -len(suffix)] if extraction.name.endswith(suffix) else ""
    problem = mismatch(build, running(), Path(archive).name)
    if problem is not None:
        if fcntl is not None and name:
            remove_extraction(root, name, build_id)  # useless here; unless another run uses it
        print(f"emp-worker: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_WRONG_BUILD)
    held = hold_own_extraction(archive, Path(site_packages)) if fcntl and name else None
    if held is not None:
        try:
            remove_old_extractions(root, name, build_id)
        except OSError as exc:  # housekeeping must never stop the worker
            print(f"emp-worker: cleaning up {root}: {exc}", file=sys.stderr, flush=True)
    os.environ["EMP_BUILD_TAG"] = str(build["label"])
