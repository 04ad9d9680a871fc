"""How the hub reads requests and writes answers: JSON responses, request bodies read with a
hard size limit and deadline, and the exception handlers that turn every error into the API's
one error shape, `{"error": {"field": ..., "message": ...}}`.

Bad input is the client's problem and gets a 4xx naming the field; an unreachable Redis is a
503; anything else is a bug and the only path to a 500, still in the same JSON shape. The
request body is read here with a hard size limit, before any parsing, so an oversized body
costs at most `max_request_bytes` of memory and never reaches Redis.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import msgspec
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from hub.errors import ApiError, error_body
from shared.errors import InvalidInput, PayloadTooLarge
from shared.outage import REDIS_OUTAGE
from shared.replication import NotReplicated

# The name the handlers' lines have always carried (they lived in hub/errors.py).
log = logging.getLogger("hub.errors")

JSON = "application/json"
T = TypeVar("T")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """API answers describe live state: never let a browser or proxy replay a stale one."""
    merged = {"Cache-Control": "no-store", **(headers or {})}
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=merged)


def error_response(
    status: int, field: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response(error_body(field, message), status, headers)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body, refusing (413) anything over `limit` bytes before it is all read, and
    (408) a body not all received within `timeout` seconds: a client that stops sending
    mid-body must not hold a request open forever."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length", "not an integer") from None
        if size > limit:
            raise PayloadTooLarge("body", f"is {size} bytes, over the limit of {limit}")
    if not is_json_media_type(request.headers.get("content-type", "")):
        raise ApiError(415, "Content-Type", "expected application/json")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise PayloadTooLarge("body", f"is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "body", f"not received within {timeout:g} s") from None
    except ClientDisconnect:
        raise ApiError(400, "body", "the client disconnected before sending it all") from None
    return b"".join(chunks)


def is_json_media_type(value: str) -> bool:
    """application/json or application/<something>+json, parameters aside; no header at all
    counts as JSON (curl -d without -H). Anything else, including form types that merely
    mention json in a parameter, is refused: browsers send those cross-site unasked."""
    media = value.split(";", 1)[0].strip().lower()
    if not media:
        return not value.strip()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def decode_model(body: bytes, model: type[T], root: str = "") -> T:
    """Parse and validate a JSON body into `model`; every failure names a field."""
    if not body.strip():
        raise InvalidInput("body", "empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        raise InvalidInput.from_msgspec(exc, root) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("body", "nested too deeply") from None


async def _invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    status = 413 if isinstance(exc, PayloadTooLarge) else 400
    return error_response(status, exc.field, exc.message)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.field, exc.message, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    field = "path" if exc.status_code == 404 else "method" if exc.status_code == 405 else ""
    message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, field, message, dict(exc.headers or {}))


async def _redis_down(request: Request, exc: Exception) -> Response:
    REDIS_OUTAGE.failed("request", exc)
    return error_response(503, "", "redis unavailable, try again", {"Retry-After": "1"})


async def _not_replicated(request: Request, exc: Exception) -> Response:
    """The change is on the primary but on fewer replicas than REDIS_WAIT_REPLICAS: not
    acknowledged, since a failover now could lose it (shared/replication.py). A retry
    with the same job id or Idempotency-Key returns the same job."""
    REDIS_OUTAGE.failed("request", exc)
    return error_response(
        503,
        "",
        "not yet replicated (REDIS_WAIT_REPLICAS); retry with the same id or Idempotency-Key",
        {"Retry-After": "1"},
    )


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    InvalidInput: _invalid_input,
    ApiError: _api_error,
    HTTPException: _http_error,
    NotReplicated: _not_replicated,
    RedisConnectionError: _redis_down,
    RedisTimeoutError: _redis_down,
    Exception: _internal,
}
