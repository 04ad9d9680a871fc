"""Legacy job ids (hub/legacy_ids.py): any non-empty string maps one-to-one onto a stored
id, and back."""

from __future__ import annotations

import re

import pytest

from hub.legacy_ids import escape, unescape
from shared.errors import InvalidInput
from shared.validation import ID_PATTERN

IDS = [
    "m-1",
    "my job 1",
    "a/b?c#d",
    "üñï 画像",
    "esc.x",
    "esc.",
    "acme~x",
    "p!q",
    "_",
    "a_b",
    "x\n",
]


@pytest.mark.parametrize("legacy_id", IDS)
def test_every_id_round_trips_through_a_valid_stored_id(legacy_id: str) -> None:
    stored = escape(legacy_id)
    assert re.fullmatch(ID_PATTERN, stored)
    assert unescape(stored) == legacy_id
    # With a customer scope or a pool in front, the chosen part is shown unescaped.
    assert unescape(f"acme~{stored}") == f"acme~{legacy_id}"
    assert unescape(f"gpu-eu!{stored}") == f"gpu-eu!{legacy_id}"


def test_valid_ids_are_stored_as_they_are() -> None:
    assert escape("m-1") == "m-1"
    assert escape("my job 1") == "esc.my_20job_201"


def test_distinct_ids_never_share_a_stored_id() -> None:
    assert len({escape(i) for i in IDS}) == len(IDS)


@pytest.mark.parametrize("stored", ["esc.abc", "esc._zz", "esc.a_2D", "esc._FF", "job-123"])
def test_ids_that_are_no_canonical_escape_are_shown_as_they_are(stored: str) -> None:
    assert unescape(stored) == stored


@pytest.mark.parametrize("bad", ["", "é" * 50, "x" * 129])
def test_ids_it_cannot_keep_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        escape(bad, "job_id")
    assert refused.value.field == "job_id"
