"""Webhook signatures are Standard Webhooks signatures: what our signer writes is what the
reference package (`standardwebhooks`) computes and accepts, byte for byte, for any id and
body; a changed body, id or timestamp, or another secret, fails. Secrets are checked at
start-up without ever being quoted, and never reach a log line."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from hub.webhooks.signing import Signer, secret_key
from shared.logs import JsonFormatter, TextFormatter
from tests.webhook_support import OTHER_SECRET, SECRET


@given(
    msg_id=st.from_regex(r"[0-9]{1,13}-[0-9]{1,4}\.(job|hub)", fullmatch=True),
    body=st.binary(max_size=2048),
    timestamp=st.integers(min_value=0, max_value=4_000_000_000),
)
def test_our_signature_is_the_reference_signature(msg_id: str, body: bytes, timestamp: int) -> None:
    reference = standardwebhooks.Webhook(SECRET)
    expected = reference.sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)
    assert Signer(SECRET).signature(msg_id, timestamp, body) == expected


def test_the_reference_verifier_accepts_our_headers_and_nothing_altered() -> None:
    body = b'{"type": "job.completed", "data": {"job_id": "j1"}}'
    headers = Signer(SECRET).headers("1-0.job", int(time.time()), body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["data"]["job_id"] == "j1"
    altered = [
        (body + b" ", headers),
        (body, {**headers, "webhook-id": "2-0.job"}),
        (body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 1)}),
    ]
    for data, changed in altered:
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(SECRET).verify(data, changed)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(OTHER_SECRET).verify(body, headers)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("abc", "must start with whsec_"),
        ("whsec_!!!", "must be base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "must encode 24 to 64 bytes, not 5"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "must encode 24 to 64 bytes, not 65"),
    ],
)
def test_bad_secrets_are_named_without_being_quoted(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        secret_key(secret)
    assert secret.removeprefix("whsec_") not in str(caught.value)


def test_unpadded_secrets_are_read_as_the_reference_reads_them() -> None:
    unpadded = SECRET.rstrip("=")
    body = b"{}"
    headers = Signer(unpadded).headers("1-0.job", int(time.time()), body)
    standardwebhooks.Webhook(SECRET).verify(body, headers)


def test_the_signer_keeps_no_printable_secret() -> None:
    signer = Signer(SECRET)
    assert SECRET not in repr(signer)
    assert SECRET.removeprefix("whsec_") not in repr(vars(signer))


def test_a_secret_in_a_log_line_is_masked() -> None:
    record = logging.LogRecord(
        "hub", logging.WARNING, __file__, 1, "bad value HUB_WEBHOOK_SECRET=%s", (SECRET,), None
    )
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert SECRET.removeprefix("whsec_") not in line
        assert "whsec_***" in line
