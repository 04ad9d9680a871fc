"""shared.redaction: what the worker dashboard scrubs from what it serves, and what every log
line of hub and worker masks."""

from __future__ import annotations

import pytest

from shared.redaction import redact, redact_url, scrub


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("redis://user:p@ss@host/0", "redis://***@host/0"),
        ("rediss://host:6380", "rediss://host:6380"),
        (
            "GET http://u:p@a/b?x=1 failed; see https://c/d",
            "GET http://***@a/b?x=1 failed; see https://c/d",
        ),
        ("mail me at ops@example.com", "mail me at ops@example.com"),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_scrub_hides_secret_looking_keys_at_any_depth() -> None:
    doc = {"a": [{"Password": "x", "n": 1}], "auth_token": "y", "ok": "redis://u:v@h", "api-key": 5}
    assert scrub(doc) == {
        "a": [{"Password": "***", "n": 1}],
        "auth_token": "***",
        "ok": "redis://***@h",
        "api-key": "***",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /ws?token=abc123&x=1", "GET /ws?token=***&x=1"),
        ("Authorization: Bearer s3cret", "Authorization: Bearer ***"),
        ("bearer s3cret", "bearer ***"),
        ("redis://u:password=hunter2", "redis://u:password=***"),
        (
            "Error connecting to redis://:hunter2@h:6379/0.",
            "Error connecting to redis://***@h:6379/0.",
        ),
        ("HUB_AUTH_TOKEN=abc", "HUB_AUTH_TOKEN=***"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_masks_secrets_in_free_text(text: str, expected: str) -> None:
    assert redact(text) == expected
