"""The SDK is a package users install with the project and import as `emp`: light (it
loads nothing of the hub, the worker or their shared code, nor their dependencies), typed
(py.typed), and with an `emp` console script."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import emp
import emp.cli

ROOT = Path(__file__).resolve().parents[2]
# Top-level modules an SDK user must not pay for.
SERVER_SIDE = ("hub", "worker", "shared", "bench", "redis", "msgspec", "orjson", "starlette",
               "uvicorn", "psutil", "jinja2", "prometheus_client")  # fmt: skip


def test_importing_the_sdk_and_its_cli_loads_nothing_server_side() -> None:
    probe = (
        "import sys, emp, emp.cli\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_SIDE!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_public_names_import_from_emp() -> None:
    from emp import AsyncClient, Client  # the import users write

    assert Client.__module__ == "emp.client"
    assert AsyncClient.__module__ == "emp.async_client"
    assert all(hasattr(emp, name) for name in emp.__all__)


def test_it_ships_typed_and_with_the_emp_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["emp"] == "emp.cli:main"
    assert "emp*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["emp"]
    assert (ROOT / "emp" / "py.typed").exists()
    assert callable(emp.cli.main)
