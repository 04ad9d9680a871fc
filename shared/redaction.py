"""Keeping secrets out of what the worker shows: credentials in URLs and secret-looking keys.

Connector errors and health details come from third-party services and quote whatever they
were sent, so the dashboard scrubs everything it serves rather than trusting each source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|authorization|credential|cookie|private[-_]?key",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """`redis://user:pw@host/0` -> `redis://***@host/0`, wherever a URL appears in `text`:
    connector errors and health details quote the URL they failed to reach."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def scrub(value: Any) -> Any:
    """Redact URL credentials in every string and the value of every secret-looking key.

    Applied to the whole snapshot as a last line of defence: health `info` and error messages
    come from third-party services and may echo back whatever they were sent.
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {
            k: "***" if isinstance(k, str) and _SECRET_KEY.search(k) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
