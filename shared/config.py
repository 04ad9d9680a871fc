"""Reading settings from the environment and `.env` files, failing loudly and by name.

Hub and worker each declare their settings; the helpers here parse one value and raise
`ConfigError` naming the variable, so a typo stops the process at start-up with a message
an operator can act on, instead of a default silently taking over.
"""

from __future__ import annotations

import math
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


class Env:
    """Typed accessors over a settings mapping; every error names the variable."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def raw(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional_text(self, name: str) -> str | None:
        return self.raw(name)

    def integer(
        self, name: str, default: int, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"expected an integer, got {value!r}") from None
        _check_range(name, number, lo, hi)
        return number

    def optional_integer(
        self, name: str, *, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        return None if self.raw(name) is None else self.integer(name, 0, lo=lo, hi=hi)

    def number(
        self, name: str, default: float, *, lo: float | None = None, hi: float | None = None
    ) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(name, f"expected a finite number, got {value!r}")
        _check_range(name, number, lo, hi)
        return number

    def optional_number(
        self, name: str, *, lo: float | None = None, hi: float | None = None
    ) -> float | None:
        return None if self.raw(name) is None else self.number(name, 0.0, lo=lo, hi=hi)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {value!r}")

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def _check_range(name: str, number: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and number < lo:
        raise ConfigError(name, f"must be >= {lo:g}, got {number:g}")
    if hi is not None and number > hi:
        raise ConfigError(name, f"must be <= {hi:g}, got {number:g}")
