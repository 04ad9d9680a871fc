"""Building and running the hub image (Containerfile) with Podman, for tests/e2e/test_container.py.

Everything specific to the machines the tests run on lives here, and only here:

- Podman runs only as `podman --cgroup-manager=cgroupfs --runtime runc` with explicit
  open-file and process limits (the defaults fail on rlimits and cgroups in these sandboxes);
  PODMAN and RUN_LIMITS hold those flags, CONTAINERS_CONF the same as a containers.conf for
  podman-compose. Nothing of it belongs in the Containerfile, compose.yaml or in what the
  README tells operators.
- No public registry can be reached, so the base image is made from Debian's packages:
  `debootstrap --variant=minbase` with python3 and python3-venv, trimmed and imported with
  `podman import`. It is tagged with a digest of how it was made (BASE_RECIPE), so Podman's
  storage keeps it between runs and it is rebuilt only when the recipe changes.
- The Redis image compose.yaml runs (REDIS_IMAGE, its EMP_REDIS_IMAGE) is made the same way,
  from Debian's redis-server.
- The hub's dependencies come from build/wheelhouse-tests/ (scripts/wheelhouse.py, for the
  base's Python), so the build itself needs no network.

The tests skip, saying why, only where they cannot run at all: not Linux, not root, or no
podman/runc/debootstrap (`python3 dev.py test` installs them as root on Debian), or no Debian
mirror for debootstrap. A build or a container that fails is a failure.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ("podman", "--cgroup-manager=cgroupfs", "--runtime", "runc")
RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
# `podman run` would otherwise start a systemd timer for the HEALTHCHECK; the tests run it by
# hand (`podman healthcheck run`), and there is no systemd here.
RUN_FLAGS = (*RUN_LIMITS, "--health-interval", "disable")
TOOLS = ("podman", "runc", "debootstrap")
# The same flags as a containers.conf, for what runs podman itself (podman-compose): pointing
# CONTAINERS_CONF at a file holding this lets compose.yaml run unchanged. The health checks'
# systemd timers cannot start here; podman logs that and runs the container anyway.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""

SUITE = "bookworm"  # Debian 12: python3 is 3.11, the oldest CPython the project supports
BASE_PYTHON = "3.11"
MIRROR = os.environ.get("EMP_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-venv")
# What a base image needs no longer: apt's downloads and lists, documentation, translations.
TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


def debian_image(name: str, packages: tuple[str, ...]) -> str:
    """The tag of a debootstrapped image of `packages`: a digest of how it is made."""
    recipe = f"debootstrap --variant=minbase --include={','.join(packages)} {SUITE}; trim {TRIM}"
    return f"localhost/{name}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


BASE_IMAGE = debian_image("emp-test-base", PACKAGES)
# The Redis image compose.yaml runs in tests/e2e/test_container.py (its EMP_REDIS_IMAGE):
# Debian's redis-server and redis-cli (the healthcheck's) on minbase, in place of the
# registry's redis image. compose.yaml runs it as `sh -c ... exec redis-server -`.
REDIS_PACKAGES = ("redis-server",)
REDIS_IMAGE = debian_image("emp-test-redis", REDIS_PACKAGES)
# One tag per test process, so sessions on one machine never run each other's build.
# The tests' own wheelhouse (the Containerfile's WHEELHOUSE argument), so a developer's
# build/wheelhouse/, made for another Python, is left alone.
WHEELHOUSE = "build/wheelhouse-tests"
HUB_IMAGE = f"localhost/emp-redis-hub:test-{os.getpid()}"
BUILD_TIMEOUT = 600  # seconds: debootstrap downloads about 40 MB on a fresh machine
# Held while the base image is made: `dev.py test` starts making it in the background before
# lint (`python -m tests.container_support base`), and the test then waits on this lock
# instead of running a second debootstrap.
BASE_LOCK = Path(tempfile.gettempdir()) / "emp-test-base.lock"


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `podman` with this machine's flags; the output is text, stderr apart."""
    done = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return done


def require_podman() -> None:
    """Skip, saying why, where the container tests cannot run."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the container tests need Linux (podman, debootstrap)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"no {', '.join(missing)}: install Debian's podman, runc and debootstrap "
            "(`python3 dev.py test` does it when run as root on Debian)"
        )
    if os.geteuid() != 0:
        pytest.skip("the container tests run rootful podman and debootstrap: run them as root")


def ensure_base_image() -> str:
    """The Debian base image, made once per recipe and kept in Podman's storage."""
    return ensure_debian_image(BASE_IMAGE, PACKAGES)


def ensure_redis_image() -> str:
    """The Redis image, made (and kept) as the base image is."""
    return ensure_debian_image(REDIS_IMAGE, REDIS_PACKAGES)


def ensure_debian_image(image: str, packages: tuple[str, ...]) -> str:
    """`image` (a debian_image tag) made of `packages` unless Podman's storage holds it."""
    with BASE_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", image, check=False).returncode == 0:
            return image
        _debootstrap_image(image, packages)
        return image


def _debootstrap_image(image: str, packages: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="emp-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        debootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
             str(rootfs), MIRROR],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
        if debootstrap.returncode != 0:
            tail = "\n".join((debootstrap.stdout + debootstrap.stderr).splitlines()[-5:])
            pytest.skip(f"debootstrap {SUITE} from {MIRROR} failed (no mirror?):\n{tail}")
        for path in TRIM:
            shutil.rmtree(rootfs / path, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [*PODMAN, "import", "-", image],
            stdin=tar.stdout, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait(timeout=60) == 0, "tar of the debootstrapped rootfs failed"
        assert imported.returncode == 0, f"podman import failed:\n{imported.stderr[-3000:]}"


def fill_wheelhouse() -> None:
    """WHEELHOUSE for the base's Python, pinned to the dev lock (as `dev.py wheelhouse`)."""
    done = subprocess.run(
        [sys.executable, "-m", "scripts.wheelhouse", "--python", BASE_PYTHON,
         "--constraint", str(ROOT / "requirements" / "dev.lock"), "--out", str(ROOT / WHEELHOUSE)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"scripts.wheelhouse failed:\n{done.stderr[-3000:]}"


def build_hub_image(base: str) -> str:
    """The hub image from this checkout's Containerfile, on `base`, offline."""
    fill_wheelhouse()
    podman(
        "build", "--format", "docker", *RUN_LIMITS, "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"WHEELHOUSE={WHEELHOUSE}",
        "--file", str(ROOT / "Containerfile"), "--tag", HUB_IMAGE, str(ROOT),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    return HUB_IMAGE


def remove_image(image: str) -> None:
    """Untag a test build; its layers stay in Podman's storage as the next build's cache."""
    podman("rmi", image, check=False)


def main(argv: list[str]) -> int:
    """`python -m tests.container_support base`: make the base image ahead of the tests (what
    `dev.py test` runs in the background while it lints, since debootstrap takes a minute or
    two on a fresh machine and mostly waits on the mirror); `... base redis` makes the Redis
    image too."""
    makers = {"base": ensure_base_image, "redis": ensure_redis_image}
    if not argv or any(arg not in makers for arg in argv):
        print("usage: python -m tests.container_support base [redis]", file=sys.stderr)
        return 2
    try:
        for arg in argv:
            print(makers[arg]())
    except pytest.skip.Exception as skipped:
        print(f"no image: {skipped.msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
