"""Signatures per the Standard Webhooks specification (https://www.standardwebhooks.com).

Each delivery carries three headers: `webhook-id` (the delivery's id, the same on every
attempt, so receivers can drop duplicates), `webhook-timestamp` (Unix seconds when this
attempt was signed, so receivers can refuse replays) and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret). The secret is
written `whsec_` + base64 of 24 to 64 random bytes. Any Standard Webhooks library verifies
these; the tests do it with the reference Python package, `standardwebhooks`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final

PREFIX: Final = "whsec_"
MIN_KEY_BYTES: Final = 24
MAX_KEY_BYTES: Final = 64
GENERATE: Final = (
    "python3 -c \"import base64, os; print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
)


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_...` secret encodes; ValueError saying what is wrong (never
    quoting the secret)."""
    if not secret.startswith(PREFIX):
        raise ValueError(f"must start with {PREFIX} (generate one with: {GENERATE})")
    encoded = secret.removeprefix(PREFIX)
    try:
        # Padding may be left off, as the reference implementation allows.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {PREFIX} must be base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"must encode {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)} "
            f"(generate one with: {GENERATE})"
        )
    return key


class Signer:
    """Signs deliveries with one secret. The key is kept, the secret text is not."""

    def __init__(self, secret: str) -> None:
        self._key = secret_key(secret)

    def __repr__(self) -> str:
        return "Signer(***)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{msg_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }
