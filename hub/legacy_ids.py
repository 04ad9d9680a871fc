"""Job ids of the original protocol: any non-empty string, mapped onto this hub's ids.

The original used a client's `message_id` (and REST `job_id`) as the job id whatever it
was, e.g. `"my job 1"`. Stored ids are narrower (shared/validation.py ID_PATTERN: no
spaces, `/`, `{`, `}`, `|`, and `~` and `!` are reserved for customer scopes and pools,
shared/pools.py), because they appear in Redis keys, URLs and lease records. So a legacy id
that is not a valid id is stored escaped, and shown unescaped on the legacy endpoints:

- a valid id that does not start with ESCAPED_PREFIX is kept as it is;
- any other id becomes ESCAPED_PREFIX followed by the id with every byte of its UTF-8
  form outside `A-Z a-z 0-9 . : @ -` written `_XX` (upper-case hex): `"my job 1"` is
  stored as `esc.my_20job_201`.

The mapping is one-to-one, and a stored id is shown unescaped only when it is exactly the
escaped form of some id (`escape(unescape(x)) == x`), so an id submitted over the new API
that merely starts with `esc.` is shown as it is. The escaped form must fit the stored
id's 128 characters; a longer id is refused naming the field.
"""

from __future__ import annotations

import re
from typing import Final

from shared.errors import InvalidInput
from shared.pools import POOL_SEPARATOR
from shared.validation import ID_PATTERN, SCOPE_SEPARATOR

ESCAPED_PREFIX: Final = "esc."
MAX_ID_CHARS: Final = 128  # ID_PATTERN
_ID_RE = re.compile(ID_PATTERN)
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:@-")
_ESCAPED_RE = re.compile(r"[A-Za-z0-9.:@-]|_[0-9A-F]{2}")


def escape(legacy_id: str, field: str = "message_id") -> str:
    """The id to store for `legacy_id` (raises InvalidInput naming `field`)."""
    if not legacy_id:
        raise InvalidInput(field, "must not be empty")
    if _ID_RE.fullmatch(legacy_id) and not legacy_id.startswith(ESCAPED_PREFIX):
        return legacy_id
    escaped = ESCAPED_PREFIX + "".join(
        chr(b) if b in _SAFE else f"_{b:02X}" for b in legacy_id.encode("utf-8", "surrogatepass")
    )
    if len(escaped) > MAX_ID_CHARS:
        raise InvalidInput(
            field,
            f"too long: at most {MAX_ID_CHARS} characters once escaped (characters other "
            "than A-Z a-z 0-9 . : @ - take 3 each per UTF-8 byte, plus 4)",
        )
    return escaped


def unescape(stored_id: str) -> str:
    """The legacy id a stored job id shows as: the scope and pool prefixes kept, the
    chosen part unescaped when it is an escaped id."""
    cut = max(stored_id.rfind(SCOPE_SEPARATOR), stored_id.rfind(POOL_SEPARATOR)) + 1
    head, chosen = stored_id[:cut], stored_id[cut:]
    if not chosen.startswith(ESCAPED_PREFIX):
        return stored_id
    body = chosen[len(ESCAPED_PREFIX) :]
    parts = _ESCAPED_RE.findall(body)
    if "".join(parts) != body:
        return stored_id
    raw = b"".join(bytes.fromhex(p[1:]) if p[0] == "_" else p.encode() for p in parts)
    try:
        legacy_id = raw.decode("utf-8", "surrogatepass")
        canonical = escape(legacy_id)
    except (UnicodeDecodeError, InvalidInput):
        return stored_id
    return head + legacy_id if canonical == chosen else stored_id
