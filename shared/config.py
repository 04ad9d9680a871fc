"""Where settings come from (the environment and `.env` files), and the error a bad one raises.

`ConfigError` names the variable, so a typo stops the process at start-up with a message an
operator can act on, instead of a default silently taking over. Each setting is declared
once as a `shared.setting.Setting`, which parses its value and raises this error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shared.errors import EmpError


class ConfigError(EmpError):
    """A setting is missing, malformed or out of range."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a dotenv file: KEY=VALUE lines, `#` comments, optional quotes, `export ` prefix."""
    out: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{path}:{number}", f"expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def load_environment(
    env_file: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The effective settings: the file's values, overridden by the real environment."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update(os.environ if environ is None else environ)
    return merged
