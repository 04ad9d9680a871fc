"""The text of `release/.env.<process>.example`, rendered from a process's catalog.

Each setting is written as its doc line (with its bounds, and "secret" for credentials, in
brackets) above `NAME=default`, under its section's title, so the file an operator copies
always names exactly the settings the code reads, with the defaults it uses.
`scripts/env_examples.py` writes the files; a test fails when the committed ones differ from
this rendering.
"""

from __future__ import annotations

from typing import Any

from shared.setting import Setting
from shared.setting_catalog import Catalog
from shared.setting_section import Section

WIDTH = 96  # of the section title lines


def render_example(catalog: Catalog) -> str:
    blocks = [_comment(catalog.header)]
    blocks += [_section(section, catalog) for section in catalog.sections if section.settings]
    return "\n\n".join(blocks) + "\n"


def _section(section: Section, catalog: Catalog) -> str:
    title = f"# --- {section.title} "
    lines = [title + "-" * max(3, WIDTH - len(title))]
    if section.note:
        lines.append(_comment(section.note))
    for setting in section.settings:
        lines.append(_comment(_doc_line(setting)))
        lines.append(f"{setting.name}={catalog.placeholders.get(setting.name, setting.shown)}")
    return "\n".join(lines)


def _doc_line(setting: Setting[Any]) -> str:
    remarks = [r for r in (setting.bounds, "secret" if setting.secret else "") if r]
    return f"{setting.doc} [{'; '.join(remarks)}]" if remarks else setting.doc


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.strip().splitlines())
