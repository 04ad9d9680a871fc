"""The SDK is a package users install with the project and import as `emp`: light (it
loads nothing of the hub, the worker or their shared code, nor their dependencies), typed
(py.typed), and with an `emp` console script."""

from __future__ import annotations

import ast
import inspect
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


# Every attribute the README's examples use must exist on one of these (asyncio.run is
# Client.run's namesake, so it passes too).
SDK_KINDS = (emp.Client, emp.AsyncClient, emp.JobHandle, emp.Job, emp.Image, emp.JobEvent,
             emp.Snapshot)  # fmt: skip
SDK_ATTRIBUTES = {name for kind in SDK_KINDS for name in dir(kind)}


def readme_examples() -> list[str]:
    """The Python examples of the README's Clients section that use the SDK (the webhook
    receiver's example uses the `standardwebhooks` package instead)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    blocks = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    return [block for block in blocks if "standardwebhooks" not in block]


def test_the_readme_examples_parse_and_use_names_the_sdk_has() -> None:
    examples = readme_examples()
    assert len(examples) >= 3
    for example in examples:
        tree = ast.parse(example)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "emp":
                assert {alias.name for alias in node.names} <= set(emp.__all__)
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert used <= SDK_ATTRIBUTES, f"not in the SDK: {sorted(used - SDK_ATTRIBUTES)}"


def public_methods(kind: type) -> dict[str, list[tuple[str, object, object]]]:
    """Each public method's parameters: name, kind and default (annotations differ by
    design: JobHandle against AsyncJobHandle, httpx's sync against async transport)."""
    return {
        name: [(p.name, p.kind, p.default) for p in inspect.signature(member).parameters.values()]
        for name, member in inspect.getmembers(kind, callable)
        if not name.startswith("_") and name not in ("close", "aclose")
    }


def test_the_async_client_mirrors_the_blocking_one() -> None:
    assert public_methods(emp.AsyncClient) == public_methods(emp.Client)
    assert public_methods(emp.AsyncJobHandle) == public_methods(emp.JobHandle)
    assert inspect.signature(emp.AsyncClient).parameters.keys() == (
        inspect.signature(emp.Client).parameters.keys()
    )
