"""Kinds of setting the connectors share: a service name, a service's URL, a path on it.

Each is a `Setting` (shared/setting.py) whose parse checks the syntax, so a connector
declares `COMFYUI_URL = COMFYUI.add(http_url("COMFYUI_URL", ...))` once and a bad value
stops the worker at start-up naming the variable. Defaults go through the same check.
"""

from __future__ import annotations

import re

from shared.config import ConfigError
from shared.setting import Setting
from shared.validation import SERVICE_INPUT_PATTERN, normalise_service


def service_name(name: str, default: str, *, doc: str) -> Setting[str]:
    """A connector's service name, checked like the hub checks job types, so a typo fails
    at start-up instead of silently never matching a job."""
    return Setting(name, _service_name(name, default), doc, _service_name, shown=default)


def http_url(name: str, default: str, *, doc: str) -> Setting[str]:
    """A base URL without its trailing slash; anything but http(s) is a configuration error."""
    return Setting(name, _http_url(name, default), doc, _http_url, shown=default)


def path(name: str, default: str, *, doc: str) -> Setting[str]:
    """A path on the service, starting with `/`."""
    return Setting(name, _path(name, default), doc, _path, shown=default)


def optional_path(name: str, *, doc: str) -> Setting[str | None]:
    """A path on the service, or None when unset."""
    return Setting(name, None, doc, _path)


def _service_name(name: str, value: str) -> str:
    if not re.fullmatch(SERVICE_INPUT_PATTERN, value):
        raise ConfigError(name, f"expected a service name (A-Z, a-z, 0-9, _ . -), got {value!r}")
    return normalise_service(value)  # case-insensitive, kept in lower case


def _http_url(name: str, value: str) -> str:
    value = value.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(name, f"expected an http:// or https:// URL, got {value!r}")
    return value


def _path(name: str, value: str) -> str:
    if not value.startswith("/"):
        raise ConfigError(name, f"expected a path starting with /, got {value!r}")
    return value
