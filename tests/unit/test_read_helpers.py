"""The small shared helpers every read relies on: decoding reply values, naming indexes."""

from __future__ import annotations

import pytest

from shared.keys import Keys
from shared.text import as_text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"job-1", "job-1"),
        ("job-1", "job-1"),
        (42, "42"),
        (1.5, "1.5"),
        ("\u00e9".encode(), "\u00e9"),
    ],
)
def test_as_text(value: object, expected: str) -> None:
    assert as_text(value) == expected


def test_status_index_names_each_status_index() -> None:
    keys = Keys("{emp}:")
    assert keys.status_index("pending") == keys.pending == "{emp}:jobs:pending"
    assert keys.status_index("active") == keys.active == "{emp}:jobs:active"
    for status in ("completed", "failed", "cancelled"):
        assert keys.status_index(status) == keys.finished(status) == f"{{emp}}:jobs:{status}"
