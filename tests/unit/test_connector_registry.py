"""The connector registry: built-ins, plugins from the `emp.connectors` entry-point group."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import pytest

import worker.connectors as registry
from shared.config import ConfigError
from worker.connectors import (
    BUILTIN,
    ConnectorLoadError,
    UnknownConnector,
    available_connectors,
    load_connector,
)
from worker.connectors.a1111 import A1111Connector
from worker.connectors.base import Connector, JobContext, ProgressFn
from worker.connectors.comfyui import ComfyUIConnector
from worker.connectors.rest import RestAsyncConnector, RestSyncConnector
from worker.connectors.simulation import SimulationConnector


class EchoConnector(Connector):
    name = "echo"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    async def run(self, job: JobContext, progress: ProgressFn, cancel: asyncio.Event) -> Any:
        return dict(job.payload)


def echo_factory(env: Mapping[str, str]) -> Connector:
    connector = EchoConnector(env)
    connector.name = env.get("ECHO_NAME", "echo-factory")
    return connector


def not_a_connector(env: Mapping[str, str]) -> object:
    return "surprise"


class Unrelated:
    def __init__(self, env: Mapping[str, str]) -> None:
        pass


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points as an installed plugin package would declare them."""
    module = types.ModuleType("fake_emp_plugin")
    module.__dict__.update(
        EchoConnector=EchoConnector,
        echo_factory=echo_factory,
        not_a_connector=not_a_connector,
        Unrelated=Unrelated,
    )
    monkeypatch.setitem(sys.modules, "fake_emp_plugin", module)
    points = [
        metadata.EntryPoint("echo", "fake_emp_plugin:EchoConnector", registry.ENTRY_POINT_GROUP),
        metadata.EntryPoint("echo2", "fake_emp_plugin:echo_factory", registry.ENTRY_POINT_GROUP),
        metadata.EntryPoint("liar", "fake_emp_plugin:not_a_connector", registry.ENTRY_POINT_GROUP),
        metadata.EntryPoint("wrong", "fake_emp_plugin:Unrelated", registry.ENTRY_POINT_GROUP),
        metadata.EntryPoint("broken", "no_such_module_x:Thing", registry.ENTRY_POINT_GROUP),
        metadata.EntryPoint("comfyui", "fake_emp_plugin:EchoConnector", registry.ENTRY_POINT_GROUP),
    ]

    def entry_points(**params: Any) -> metadata.EntryPoints:
        assert params == {"group": registry.ENTRY_POINT_GROUP}
        return metadata.EntryPoints(points)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("simulation", SimulationConnector),
        ("comfyui", ComfyUIConnector),
        ("a1111", A1111Connector),
        ("rest_sync", RestSyncConnector),
        ("rest_async", RestAsyncConnector),
    ],
)
def test_builtins_load_with_their_service_name(name: str, cls: type[Connector]) -> None:
    connector = load_connector(name, {})
    assert type(connector) is cls
    assert connector.name == name
    assert BUILTIN[name] is cls


def test_connectors_read_settings_from_env() -> None:
    connector = load_connector("rest_sync", {"REST_SYNC_SERVICE": "upscaler"})
    assert connector.name == "upscaler"
    with pytest.raises(ConfigError, match="COMFYUI_URL"):
        load_connector("comfyui", {"COMFYUI_URL": "ftp://nope"})
    with pytest.raises(ConfigError, match="A1111_AUTH"):
        load_connector("a1111", {"A1111_AUTH": "no-colon"})
    with pytest.raises(ConfigError, match="REST_ASYNC_POLL_SECONDS"):
        load_connector("rest_async", {"REST_ASYNC_POLL_SECONDS": "often"})


def test_unknown_name_lists_what_is_available() -> None:
    with pytest.raises(UnknownConnector) as unknown:
        load_connector("comfy", {})
    message = str(unknown.value)
    assert "unknown connector 'comfy'" in message
    for name in BUILTIN:
        assert name in message
    assert isinstance(unknown.value, LookupError)


def test_plugins_load_from_entry_points(plugins: None) -> None:
    echo = load_connector("echo", {"X": "1"})
    assert isinstance(echo, EchoConnector)
    assert echo.env == {"X": "1"}
    made = load_connector("echo2", {"ECHO_NAME": "custom"})
    assert made.name == "custom"


def test_builtins_win_over_plugins_of_the_same_name(plugins: None) -> None:
    assert isinstance(load_connector("comfyui", {}), ComfyUIConnector)


def test_available_lists_builtins_then_plugins(plugins: None) -> None:
    assert available_connectors() == [*BUILTIN, "broken", "echo", "echo2", "liar", "wrong"]
    with pytest.raises(UnknownConnector, match="echo2"):
        load_connector("nope", {})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("broken", "failed to import"),
        ("liar", "returned str, not a Connector"),
        ("wrong", "is not a Connector class"),
    ],
)
def test_broken_plugins_fail_clearly(plugins: None, name: str, problem: str) -> None:
    with pytest.raises(ConnectorLoadError, match=problem):
        load_connector(name, {})
