"""A process's catalog: every setting it reads, in the order its example env file lists them.

The hub and the worker each build one from their sections and the shared ones. From it come
the names an operator may use (`refuse_unknown`) and `release/.env.<process>.example`
(`shared/env_example.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import ConfigError
from shared.setting import Setting
from shared.setting_section import Section


@dataclass(frozen=True)
class Catalog:
    """process: "hub" or "worker". header: the prose at the top of its example file.
    owned_prefixes: every name with one of these prefixes must be declared, so a misspelt
    `HUB_OPERATER_TOKEN` stops the process instead of leaving it without operators.
    placeholders: values the example file shows instead of the default (a token to replace)."""

    process: str
    header: str
    sections: tuple[Section, ...]
    owned_prefixes: tuple[str, ...] = ()
    placeholders: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for setting in self.settings():
            if setting.name in seen:
                raise ValueError(f"{setting.name} is declared twice in the {self.process} catalog")
            seen.add(setting.name)
        if unknown := sorted(set(self.placeholders) - seen):
            raise ValueError(f"placeholders for undeclared settings: {', '.join(unknown)}")

    def settings(self) -> Iterable[Setting[Any]]:
        for section in self.sections:
            yield from section.settings

    def names(self) -> frozenset[str]:
        return frozenset(setting.name for setting in self.settings())

    def refuse_unknown(self, names: Iterable[str]) -> None:
        """ConfigError naming the first undeclared name that carries an owned prefix."""
        known = self.names()
        unknown = sorted(n for n in names if n.startswith(self.owned_prefixes) and n not in known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting (unknown: {', '.join(unknown)})")
