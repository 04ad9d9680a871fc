"""Reply values as text, decoded one way everywhere.

The clients in this project do not set `decode_responses` (scripts and payloads stay bytes
until someone needs them as text), so every value read back from Redis is bytes; numbers
and str pass through `str`, which keeps callers that hold an already-decoded value working.
"""

from __future__ import annotations


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
