"""Declaring a setting once: the parsers, sections, catalogs and example files derived from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from shared.config import ConfigError
from shared.env_example import render_example
from shared.setting import (
    Setting,
    choice,
    flag,
    integer,
    items,
    number,
    optional_integer,
    optional_number,
    optional_text,
    text,
)
from shared.setting_catalog import Catalog
from shared.setting_section import Section, field_settings, read_fields


def error(setting: Setting[Any], values: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        setting.read(values)
    assert info.value.name == setting.name
    return str(info.value)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_blank_means_the_default(value: str | None) -> None:
    values = {} if value is None else {"PORT": value}
    assert integer("PORT", 3001, doc="d").read(values) == 3001
    assert optional_integer("PORT", doc="d").read(values) is None
    assert text("PORT", "x", doc="d").read(values) == "x"


def test_values_are_stripped_and_typed() -> None:
    assert integer("N", 0, doc="d").read({"N": " 42 "}) == 42
    assert number("N", 0.0, doc="d").read({"N": "2.5"}) == 2.5
    assert optional_number("N", doc="d").read({"N": "1e3"}) == 1000.0
    assert optional_text("N", doc="d").read({"N": "  hello world "}) == "hello world"
    assert items("N", doc="d").read({"N": "a, b,,c ,"}) == ("a", "b", "c")
    assert choice("N", "json", ("json", "text"), doc="d").read({"N": "TEXT"}) == "text"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("1", True), ("true", True), ("Yes", True), ("on", True)],
        *[("0", False), ("false", False), ("NO", False), ("off", False)],
    ],
)
def test_flags(value: str, expected: bool) -> None:
    assert flag("F", not expected, doc="d").read({"F": value}) is expected


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (integer("N", 1, doc="d"), "1.5", "N: expected an integer, got '1.5'"),
        (integer("N", 1, doc="d", lo=1), "0", "N: must be >= 1, got 0"),
        (integer("N", 1, doc="d", hi=10), "11", "N: must be <= 10, got 11"),
        (optional_integer("N", doc="d", lo=1, hi=65535), "70000", "N: must be <= 65535, got 70000"),
        (number("N", 1.0, doc="d"), "soon", "N: expected a number, got 'soon'"),
        (number("N", 1.0, doc="d"), "inf", "N: expected a finite number, got 'inf'"),
        (number("N", 1.0, doc="d", lo=0.1), "0.05", "N: must be >= 0.1, got 0.05"),
        (optional_number("N", doc="d", hi=60), "61", "N: must be <= 60, got 61"),
        (flag("N", True, doc="d"), "maybe", "N: expected true or false, got 'maybe'"),
        (choice("N", "a", ("a", "b"), doc="d"), "C", "N: expected one of a, b, got 'c'"),
    ],
)
def test_type_and_bound_errors_name_the_variable(
    setting: Setting[Any], value: str, message: str
) -> None:
    assert error(setting, {"N": value}) == message


def test_map_converts_the_value_and_the_default_but_shows_what_an_operator_writes() -> None:
    minutes = number("TIMEOUT_MINUTES", 30.0, doc="d", lo=0.01).map(lambda m: m * 60)
    assert minutes.default == 1800
    assert minutes.read({"TIMEOUT_MINUTES": "2"}) == 120
    assert minutes.shown == "30"
    assert error(minutes, {"TIMEOUT_MINUTES": "0"}) == "TIMEOUT_MINUTES: must be >= 0.01, got 0"


def test_bounds_are_described_for_the_example_files() -> None:
    assert integer("N", 1, doc="d", lo=0, hi=65535).bounds == "0-65535"
    assert number("N", 1.0, doc="d", lo=0.05).bounds == ">= 0.05"
    assert optional_number("N", doc="d", hi=60).bounds == "<= 60"
    assert text("N", "", doc="d").bounds == ""


# --- sections and dataclass fields ------------------------------------------------------------

NETWORK = Section("network")


@dataclasses.dataclass(frozen=True)
class Listener:
    port: int = NETWORK.field(integer("EXAMPLE_PORT", 80, doc="Port", lo=1, hi=65535))
    token: str | None = NETWORK.field(optional_text("EXAMPLE_TOKEN", doc="Token", secret=True))
    not_a_setting: int = 7


def test_a_field_takes_its_default_from_its_declaration() -> None:
    assert Listener() == Listener(port=80, token=None, not_a_setting=7)


def test_read_fields_parses_exactly_the_declared_fields() -> None:
    values = {"EXAMPLE_PORT": "8080", "EXAMPLE_TOKEN": "t0ken", "NOT_A_SETTING": "9"}
    assert read_fields(Listener, values) == {"port": 8080, "token": "t0ken"}
    assert set(field_settings(Listener)) == {"port", "token"}


def test_a_secret_field_stays_out_of_the_repr() -> None:
    assert "t0ken" not in repr(Listener(token="t0ken"))
    assert "port=80" in repr(Listener(token="t0ken"))


def test_a_section_lists_its_settings_in_declaration_order() -> None:
    assert [s.name for s in NETWORK.settings] == ["EXAMPLE_PORT", "EXAMPLE_TOKEN"]


def test_a_name_cannot_be_declared_twice() -> None:
    section = Section("s")
    section.add(text("A", "", doc="d"))
    with pytest.raises(ValueError, match="A is declared twice"):
        section.add(integer("A", 1, doc="d"))
    other = Section("t")
    other.add(text("A", "", doc="d"))
    with pytest.raises(ValueError, match="A is declared twice in the demo catalog"):
        Catalog("demo", "header", (section, other))


# --- catalogs: unknown names and example files ------------------------------------------------


def _catalog() -> Catalog:
    server = Section("server", note="Where it listens.")
    server.add(text("APP_HOST", "0.0.0.0", doc="Listening address"))
    server.add(integer("APP_PORT", 3001, doc="Port", lo=0, hi=65535))
    server.add(flag("APP_LOG", True, doc="Log requests"))
    auth = Section("auth")
    auth.add(optional_text("APP_TOKEN", doc="Client token", secret=True))
    auth.add(items("APP_ORIGINS", ("a", "b"), doc="Origins"))
    return Catalog(
        "app",
        "Demo settings.\nSecond line.",
        (server, auth, Section("empty")),
        owned_prefixes=("APP_", "WS_"),
        placeholders={"APP_TOKEN": "replace-me"},
    )


def test_names_with_an_owned_prefix_must_be_declared() -> None:
    catalog = _catalog()
    catalog.refuse_unknown(["APP_HOST", "APP_TOKEN", "PATH", "HOME", "LOG_LEVEL"])
    with pytest.raises(ConfigError) as info:
        catalog.refuse_unknown(["APP_HOST", "WS_PROT", "APP_PROT"])
    assert info.value.name == "APP_PROT"
    assert str(info.value) == "APP_PROT: unknown setting (unknown: APP_PROT, WS_PROT)"


def test_a_catalog_without_owned_prefixes_refuses_nothing() -> None:
    Catalog("x", "h", (Section("s"),)).refuse_unknown(["APP_PROT", "ANYTHING"])


def test_placeholders_must_name_declared_settings() -> None:
    with pytest.raises(ValueError, match="APP_TYPO"):
        Catalog("x", "h", (Section("s"),), placeholders={"APP_TYPO": "v"})


def test_the_example_file_comes_from_the_declarations() -> None:
    assert render_example(_catalog()) == (
        "# Demo settings.\n"
        "# Second line.\n"
        "\n"
        "# --- server " + "-" * 83 + "\n"
        "# Where it listens.\n"
        "# Listening address\n"
        "APP_HOST=0.0.0.0\n"
        "# Port [0-65535]\n"
        "APP_PORT=3001\n"
        "# Log requests\n"
        "APP_LOG=true\n"
        "\n"
        "# --- auth " + "-" * 85 + "\n"
        "# Client token [secret]\n"
        "APP_TOKEN=replace-me\n"
        "# Origins\n"
        "APP_ORIGINS=a,b\n"
    )
