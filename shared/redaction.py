"""Keeping secrets out of what hub and worker show and log: credentials in URLs, bearer
tokens, `token=` and `password=` values, webhook signing secrets (`whsec_...`), and the
values of secret-looking keys.

Connector errors and health details come from third-party services and quote whatever they
were sent, so the worker dashboard scrubs everything it serves (`scrub`) rather than trusting
each source; every log line of hub and worker goes through `redact` (shared/logs.py) for the
same reason: a Redis connection error quotes the URL it failed to reach, password included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_SECRET_TEXT: Final = re.compile(
    r"(?i)(authorization:\s*(?:\w+\s+)?|bearer\s+|token=|password=|whsec_)([^\s&\"',;]+)"
)
_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|authorization|credential|cookie|private[-_]?key",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """`redis://user:pw@host/0` -> `redis://***@host/0`, wherever a URL appears in `text`:
    connector errors and health details quote the URL they failed to reach."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def redact(text: str) -> str:
    """Mask URL credentials, bearer tokens, `token=` query values, passwords and webhook
    secrets in free text: the last line of defence for log lines, whose callers never mean
    to log a secret."""
    return _SECRET_TEXT.sub(lambda m: m.group(1) + "***", redact_url(text))


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
