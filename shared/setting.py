"""One setting, declared once: its variable name, type, default, bounds and one-line doc.

A `Setting[T]` turns the text of one environment variable into a `T`. Every error is a
`ConfigError` naming the variable (`HUB_PORT: must be <= 65535, got 70000`), so a typo stops
the process at start-up with a message an operator can act on instead of a default silently
taking over. An unset or blank variable means the default.

The constructors below (`integer`, `number`, `text`, `flag`, `items`, `choice` and their
`optional_` forms) cover the ordinary kinds; a setting with its own syntax passes its own
`parse` to `Setting`. Where a setting lives (its section, the dataclass field it fills) is
`shared/setting_section.py`'s business.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.config import ConfigError

T = TypeVar("T")
U = TypeVar("U")

# (variable name, its stripped non-empty text) -> the value; raises ConfigError(name, ...).
Parse = Callable[[str, str], T]


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """name: the environment variable. default: the value when it is unset or blank.
    doc: the one line written above it in the example env files.
    parse: text to value, enforcing the bounds. bounds: those bounds in words ("1-3600",
    ">= 1024"), for the example files. shown: the default as an operator writes it ("" for
    none). secret: it holds a credential: kept out of reprs, marked in the example files."""

    name: str
    default: T
    doc: str
    parse: Parse[T]
    bounds: str = ""
    shown: str = ""
    secret: bool = False

    def read(self, values: Mapping[str, str]) -> T:
        text = values.get(self.name, "").strip()
        return self.default if not text else self.parse(self.name, text)

    def map(self, convert: Callable[[T], U]) -> Setting[U]:
        """The same variable, its value (and default) passed through `convert`: a unit
        (minutes to seconds) or a normal form (`info` to `INFO`). `shown` stays as written."""
        parse = self.parse

        def parse_and_convert(name: str, text: str) -> U:
            return convert(parse(name, text))

        return Setting(
            self.name,
            convert(self.default),
            self.doc,
            parse_and_convert,
            bounds=self.bounds,
            shown=self.shown,
            secret=self.secret,
        )


# --- the ordinary kinds -------------------------------------------------------------------


def text(name: str, default: str, *, doc: str, secret: bool = False) -> Setting[str]:
    return Setting(name, default, doc, _as_text, shown=default, secret=secret)


def optional_text(name: str, *, doc: str, secret: bool = False) -> Setting[str | None]:
    return Setting(name, None, doc, _as_text, secret=secret)


def integer(
    name: str, default: int, *, doc: str, lo: int | None = None, hi: int | None = None
) -> Setting[int]:
    parse = _integer_parser(lo, hi)
    return Setting(name, default, doc, parse, bounds=_bounds(lo, hi), shown=str(default))


def optional_integer(
    name: str, *, doc: str, lo: int | None = None, hi: int | None = None
) -> Setting[int | None]:
    return Setting(name, None, doc, _integer_parser(lo, hi), bounds=_bounds(lo, hi))


def number(
    name: str, default: float, *, doc: str, lo: float | None = None, hi: float | None = None
) -> Setting[float]:
    parse = _number_parser(lo, hi)
    return Setting(name, default, doc, parse, bounds=_bounds(lo, hi), shown=show_number(default))


def optional_number(
    name: str, *, doc: str, lo: float | None = None, hi: float | None = None
) -> Setting[float | None]:
    parse = _number_parser(lo, hi)
    return Setting(name, None, doc, parse, bounds=_bounds(lo, hi))


def flag(name: str, default: bool, *, doc: str) -> Setting[bool]:
    return Setting(name, default, doc, _as_flag, shown="true" if default else "false")


def items(name: str, default: tuple[str, ...] = (), *, doc: str) -> Setting[tuple[str, ...]]:
    """Comma-separated; blanks between commas are dropped."""
    return Setting(name, default, doc, _as_items, shown=",".join(default))


def choice(name: str, default: str, choices: tuple[str, ...], *, doc: str) -> Setting[str]:
    """One of `choices`, case-insensitive; the value is lower-case."""

    def parse(name: str, value: str) -> str:
        lowered = value.lower()
        if lowered not in choices:
            raise ConfigError(name, f"expected one of {', '.join(choices)}, got {lowered!r}")
        return lowered

    return Setting(name, default, doc, parse, shown=default)


def show_number(value: float) -> str:
    """30.0 -> "30", 0.5 -> "0.5": how an operator would write it."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{show_number(lo)}-{show_number(hi)}"
    if lo is not None:
        return f">= {show_number(lo)}"
    if hi is not None:
        return f"<= {show_number(hi)}"
    return ""


# --- parsers ------------------------------------------------------------------------------


def _as_text(name: str, value: str) -> str:
    return value


def _as_flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _as_items(name: str, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _integer_parser(lo: int | None, hi: int | None) -> Parse[int]:
    def parse(name: str, value: str) -> int:
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(name, f"expected an integer, got {value!r}") from None
        _check_range(name, parsed, lo, hi)
        return parsed

    return parse


def _number_parser(lo: float | None, hi: float | None) -> Parse[float]:
    def parse(name: str, value: str) -> float:
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {value!r}") from None
        if not math.isfinite(parsed):
            raise ConfigError(name, f"expected a finite number, got {value!r}")
        _check_range(name, parsed, lo, hi)
        return parsed

    return parse


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ConfigError(name, f"must be >= {lo:g}, got {value:g}")
    if hi is not None and value > hi:
        raise ConfigError(name, f"must be <= {hi:g}, got {value:g}")
