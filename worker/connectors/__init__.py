"""Connector registry: the built-in connectors plus plugins from the `emp.connectors` group.

A plugin package declares, in its pyproject.toml:

    [project.entry-points."emp.connectors"]
    my_service = "my_package.connector:MyConnector"

where the object is a Connector subclass or any `(env) -> Connector` factory. Built-ins win
over plugins of the same name, so installing a package cannot silently replace them.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Final

from shared.errors import EmpError
from shared.setting_section import Section
from worker.connectors.a1111 import A1111, A1111Connector
from worker.connectors.base import Connector, ConnectorFactory
from worker.connectors.comfyui import COMFYUI, ComfyUIConnector
from worker.connectors.output_store import OUTPUTS
from worker.connectors.rest import REST_ASYNC, REST_SYNC, RestAsyncConnector, RestSyncConnector
from worker.connectors.simulation import SIMULATION, SimulationConnector

__all__ = [
    "BUILTIN",
    "BUILTIN_SETTINGS",
    "ENTRY_POINT_GROUP",
    "ConnectorLoadError",
    "UnknownConnector",
    "available_connectors",
    "load_connector",
]

ENTRY_POINT_GROUP: Final = "emp.connectors"

BUILTIN: Final[Mapping[str, ConnectorFactory]] = {
    "simulation": SimulationConnector,
    "comfyui": ComfyUIConnector,
    "a1111": A1111Connector,
    "rest_sync": RestSyncConnector,
    "rest_async": RestAsyncConnector,
}
# The built-ins' settings, in the order of BUILTIN (plugins document their own); the output
# store's, which ComfyUI and A1111 share, after theirs.
BUILTIN_SETTINGS: Final[tuple[Section, ...]] = (
    SIMULATION,
    COMFYUI,
    A1111,
    OUTPUTS,
    REST_SYNC,
    REST_ASYNC,
)


class UnknownConnector(EmpError, LookupError):
    """No built-in connector and no installed plugin has this name."""

    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) or "none"
        super().__init__(f"unknown connector {name!r}; available: {listed}")
        self.name = name
        self.available = available


class ConnectorLoadError(EmpError):
    """A plugin exists but could not be imported or did not produce a Connector."""


def _plugins() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_connectors() -> list[str]:
    """Every name `load_connector` accepts: built-ins first, then plugins, sorted."""
    plugins = sorted(name for name in _plugins() if name not in BUILTIN)
    return [*BUILTIN, *plugins]


def load_connector(name: str, env: Mapping[str, str]) -> Connector:
    """Build the connector `name`, configured from `env`.

    Raises UnknownConnector (listing what is available), ConnectorLoadError for a broken
    plugin, and shared.config.ConfigError when a setting in `env` is invalid."""
    key = name.strip()
    builtin = BUILTIN.get(key)
    if builtin is not None:
        return builtin(env)
    plugins = _plugins()
    entry_point = plugins.get(key)
    if entry_point is None:
        raise UnknownConnector(key, available_connectors())
    try:
        factory: object = entry_point.load()
    except Exception as exc:
        raise ConnectorLoadError(
            f"connector plugin {key!r} ({entry_point.value}) failed to import: {exc}"
        ) from exc
    return _build(key, entry_point.value, factory, env)


def _build(key: str, origin: str, factory: object, env: Mapping[str, str]) -> Connector:
    if isinstance(factory, type) and not issubclass(factory, Connector):
        raise ConnectorLoadError(f"connector plugin {key!r} ({origin}) is not a Connector class")
    if not callable(factory):
        raise ConnectorLoadError(f"connector plugin {key!r} ({origin}) is not callable")
    build: ConnectorFactory = factory
    connector = build(env)
    if not isinstance(connector, Connector):
        raise ConnectorLoadError(
            f"connector plugin {key!r} ({origin}) returned {type(connector).__name__}, "
            "not a Connector"
        )
    return connector
