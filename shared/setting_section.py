"""Sections: settings grouped as the example env files list them, and bound to dataclass fields.

A section is filled where its settings are declared, in declaration order, which is the
order its example file lists them. Two ways in:

    HTTP = Section("HTTP and WebSocket")

    @dataclass(frozen=True)
    class HubSettings:
        port: int = HTTP.field(integer("HUB_PORT", 3001, lo=0, hi=65535, doc="REST API"))

    WS_AUTH_TOKEN = AUTH.add(text("WS_AUTH_TOKEN", "", doc="..."))

`field` is for a setting that fills one field: `read_fields(HubSettings, values)` then parses
every such field, so adding one is that one line. `add` is for variables that code combines
into one value (two token lists into one, the tiers and customers into a policy).

Declare and fill a section in one module, so importing it yields the whole section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from shared.setting import Setting

T = TypeVar("T")

_SETTING = "emp.setting"  # the dataclass field metadata key holding a field's Setting


class Section:
    """A titled group of settings; `note` is prose printed under the title."""

    def __init__(self, title: str, note: str = "") -> None:
        self.title = title
        self.note = note
        self._settings: list[Setting[Any]] = []

    @property
    def settings(self) -> tuple[Setting[Any], ...]:
        return tuple(self._settings)

    def add(self, setting: Setting[T]) -> Setting[T]:
        if any(known.name == setting.name for known in self._settings):
            raise ValueError(f"{setting.name} is declared twice in section {self.title!r}")
        self._settings.append(setting)
        return setting

    def field(self, setting: Setting[T]) -> T:
        """A dataclass field filled from `setting` by `read_fields`; its default is the
        setting's, and a secret stays out of the dataclass's repr."""
        self.add(setting)
        # Typed as T, like dataclasses.field itself: the class body sees the field's type.
        return dataclasses.field(
            default=setting.default, repr=not setting.secret, metadata={_SETTING: setting}
        )

    def __repr__(self) -> str:
        return f"Section({self.title!r}, {len(self._settings)} settings)"


def field_settings(cls: type[Any]) -> dict[str, Setting[Any]]:
    """The fields of dataclass `cls` declared with `Section.field`, by field name."""
    return {f.name: f.metadata[_SETTING] for f in dataclasses.fields(cls) if _SETTING in f.metadata}


def read_fields(cls: type[Any], values: Mapping[str, str]) -> dict[str, Any]:
    """Every declared field of `cls` parsed from `values`, as keyword arguments for `cls`."""
    return {name: setting.read(values) for name, setting in field_settings(cls).items()}
