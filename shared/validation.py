"""Constrained field types and the one place that turns untrusted JSON into typed models.

Limits live here so hub, worker and broker enforce the same ones. Identifiers exclude
`{`, `}` (Redis Cluster hash tags), `|` (the lease record separator) and whitespace.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeVar

import msgspec
import orjson

from shared.errors import InvalidInput, PayloadTooLarge


def whole(body: str) -> str:
    r"""A pattern that matches the whole string only, for msgspec (which searches with
    Python's `re`) and for the OpenAPI document alike. Python's `$` also matches just
    before a final newline, which let `"id\n"` through (the job was written, then its
    answer failed on the Location header); `(?!\n)` refuses that. `\Z` would too, but the
    patterns are published in the OpenAPI document, and JSON Schema's regex dialect
    (ECMA 262) has no `\Z`. Code that matches these patterns itself uses `re.fullmatch`."""
    return f"^{body}$(?!\\n)"


ID_PATTERN: Final = whole(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
# Service names are case-insensitive: accepted in any case (SERVICE_INPUT_PATTERN), kept in
# lower case (SERVICE_PATTERN) by normalise_service wherever one comes in, so "ComfyUI" from
# an original emp-redis client and "comfyui" from a worker's SERVICES are the same service.
SERVICE_PATTERN: Final = whole(r"[a-z0-9][a-z0-9_.-]{0,63}")
SERVICE_INPUT_PATTERN: Final = whole(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Names that are compared as written: model files, regions, compliance tags, quality levels.
NAME_PATTERN: Final = whole(r"[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?")

# A customer-bound client's chosen id X is stored as `{customer}~{X}` (shared.job.scoped_job_id):
# `~` is in no id a client may send, so nobody else can write into a customer's space.
SCOPE_SEPARATOR: Final = "~"
# Ids as stored: a client's id, a generated one, or a scoped one (customer + '~' + chosen),
# each after its pool and a '!' outside the default pool (shared/pools.py).
STORED_ID_PATTERN: Final = whole(r"[A-Za-z0-9][A-Za-z0-9._:@~!-]{0,300}")

MAX_LIST: Final = 64
MAX_JSON_DEPTH: Final = 32

JobId = Annotated[
    str, msgspec.Meta(pattern=ID_PATTERN, description="1-128 chars of A-Z a-z 0-9 . _ : @ -")
]
StoredJobId = Annotated[str, msgspec.Meta(pattern=STORED_ID_PATTERN)]
CustomerId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
WorkerId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
ServiceType = Annotated[
    str,
    msgspec.Meta(
        pattern=SERVICE_INPUT_PATTERN,
        description="service name, e.g. comfyui; case-insensitive, kept in lower case",
    ),
]


def normalise_service(name: str) -> str:
    """A service name as kept and compared: lower case (ASCII: the pattern allows no other)."""
    return name.lower()


def normalise_services(names: list[str]) -> list[str]:
    """Service names in lower case, each once, in their first order."""
    return list(dict.fromkeys(map(normalise_service, names)))


Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
NameList = Annotated[list[Name], msgspec.Meta(max_length=MAX_LIST)]
CustomerList = Annotated[list[CustomerId], msgspec.Meta(max_length=4096)]

T = TypeVar("T")


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Depth of a decoded JSON value, stopping early once `limit` is exceeded."""
    depth = 0
    level: list[Any] = [value]
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        if depth > limit:
            return depth
        nxt: list[Any] = []
        for c in containers:
            nxt.extend(c.values() if isinstance(c, dict) else c)
        level = nxt
    return depth


def check_document(
    value: Any, field: str, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH
) -> bytes:
    """Encode a free-form JSON document (payload, result) and enforce its size and depth."""
    if json_depth(value, max_depth) > max_depth:
        raise InvalidInput(field, f"nested deeper than {max_depth} levels")
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(field, f"not JSON-serialisable: {exc}") from None
    if len(encoded) > max_bytes:
        raise PayloadTooLarge(field, f"is {len(encoded)} bytes, over the limit of {max_bytes}")
    return encoded


def convert(value: Any, model: type[T], root: str = "") -> T:
    """Validate decoded JSON into `model`, raising InvalidInput that names the field."""
    try:
        return msgspec.convert(value, model)
    except msgspec.ValidationError as exc:
        raise InvalidInput.from_msgspec(exc, root) from None


def decode_json(body: bytes | str, field: str = "body") -> Any:
    """Parse untrusted JSON text; a syntax error is InvalidInput naming `field`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(field, f"malformed JSON: {exc}") from None
