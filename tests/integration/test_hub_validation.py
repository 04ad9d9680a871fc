"""Bad input: every case is a 4xx naming the field, and nothing is written to Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from shared.settings import BrokerSettings
from tests.hub_support import ACME, CLIENT, hub_client, hub_settings

REQUEST_LIMIT = 64 * 1024
PAYLOAD_LIMIT = 4096


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def raw(body: bytes, **headers: str) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": "application/json", **headers}}


def js(doc: Any, **headers: str) -> dict[str, Any]:
    return raw(orjson.dumps(doc), **headers)


OK = {"service_type": "comfyui"}

# (case id, request kwargs, expected status, expected field)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed json", raw(b'{"service_type": '), 400, "body"),
    ("not json at all", raw(b"service_type=comfyui"), 400, "body"),
    ("empty body", raw(b""), 400, "body"),
    ("array body", js([OK]), 400, ""),
    ("missing service_type", js({"priority": 5}), 400, "service_type"),
    ("service_type wrong type", js({"service_type": 7}), 400, "service_type"),
    ("service_type format", js({"service_type": "Comfy UI!"}), 400, "service_type"),
    ("service_type too long", js({"service_type": "a" * 65}), 400, "service_type"),
    ("priority above range", js({**OK, "priority": 101}), 400, "priority"),
    ("priority below range", js({**OK, "priority": -1}), 400, "priority"),
    ("priority wrong type", js({**OK, "priority": "high"}), 400, "priority"),
    ("priority float", js({**OK, "priority": 5.5}), 400, "priority"),
    ("unknown field", js({**OK, "colour": "red"}), 400, "colour"),
    (
        "unknown requirement",
        js({**OK, "requirements": {"hardware": {"gpu_memory": 80}}}),
        400,
        "requirements.hardware.gpu_memory",
    ),
    (
        "gpu count zero",
        js({**OK, "requirements": {"hardware": {"gpu": {"count": 0}}}}),
        400,
        "requirements.hardware.gpu.count",
    ),
    ("oversized id", js({**OK, "id": "x" * 200}), 400, "id"),
    ("id with spaces", js({**OK, "id": "a b"}), 400, "id"),
    ("id with hash tag", js({**OK, "id": "a{b}"}), 400, "id"),
    ("bad customer id", js({**OK, "customer_id": "acme corp"}), 400, "customer_id"),
    ("payload not object", js({**OK, "payload": [1, 2]}), 400, "payload"),
    ("payload too deep", js({**OK, "payload": nested(40)}), 400, "payload"),
    (
        "body absurdly deep",
        raw(b'{"service_type":"x","payload":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"),
        400,
        "body",
    ),
    (
        "payload over its limit",
        js({**OK, "payload": {"blob": "x" * (PAYLOAD_LIMIT + 10)}}),
        413,
        "payload",
    ),
    (
        "body over the request limit",
        js({**OK, "payload": {"blob": "x" * (REQUEST_LIMIT + 10)}}),
        413,
        "body",
    ),
    ("deadline without offset", js({**OK, "deadline": "2030-01-01T00:00:00"}), 400, "deadline"),
    ("deadline not a date", js({**OK, "deadline": "tomorrow"}), 400, "deadline"),
    (
        "strict isolation without customer",
        js({**OK, "requirements": {"customer_isolation": "strict"}}),
        400,
        "customer_id",
    ),
    ("too many tags", js({**OK, "tags": [f"t{i}" for i in range(17)]}), 400, "tags"),
    ("timeout zero", js({**OK, "timeout_seconds": 0}), 400, "timeout_seconds"),
    ("max_retries negative", js({**OK, "max_retries": -1}), 400, "max_retries"),
    ("idempotency key too long", js(OK, **{"Idempotency-Key": "k" * 300}), 400, "Idempotency-Key"),
    (
        "wrong content type",
        raw(orjson.dumps(OK), **{"Content-Type": "text/plain"}),
        415,
        "Content-Type",
    ),
    (
        "bad content length",
        raw(orjson.dumps(OK), **{"Content-Length": "abc"}),
        400,
        "Content-Length",
    ),
]


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    broker = BrokerSettings(max_payload_bytes=PAYLOAD_LIMIT)
    settings = hub_settings(redis_url, broker, max_request_bytes=REQUEST_LIMIT)
    async with hub_client(settings) as client:
        yield client


# A customer-bound token supplies the customer_id, so "strict isolation without a customer"
# is not a bad input for it: that case runs with the unbound token only.
TOKEN_CASES = [
    pytest.param(token, *case[1:], id=f"{case[0]}-{token}")
    for case in CASES
    for token in ("client", "customer-bound")
    if not (token == "customer-bound" and b"strict" in case[1]["content"])
]


@pytest.mark.parametrize(("token", "request_kwargs", "status", "field"), TOKEN_CASES)
async def test_bad_submission_is_4xx_naming_the_field_and_writes_nothing(
    api: httpx.AsyncClient,
    redis: Redis,
    request_kwargs: dict[str, Any],
    status: int,
    field: str,
    token: str,
) -> None:
    """Both parse paths: unbound tokens decode straight from bytes, customer-bound ones
    go through a dict (to supply the customer); both must answer the same."""
    before = await redis.dbsize()
    kwargs = dict(request_kwargs)
    kwargs["headers"] = {**(CLIENT if token == "client" else ACME), **kwargs["headers"]}
    response = await api.post("/jobs", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]
    assert await redis.dbsize() == before


async def test_the_same_cases_in_a_batch_write_nothing(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    before = await redis.dbsize()
    response = await api.post(
        "/jobs/batch",
        json={"jobs": [OK, OK, {**OK, "payload": {"blob": "x" * (PAYLOAD_LIMIT + 10)}}]},
        headers=CLIENT,
    )
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "jobs[2].payload"
    assert await redis.dbsize() == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/jobs/j1/cancel", b"{nope", "body"),
        ("/jobs/j1/cancel", b'{"reason": 5}', "reason"),
        ("/jobs/j1/cancel", b'{"why": "x"}', "why"),
    ],
)
async def test_bad_cancel_bodies(
    api: httpx.AsyncClient, redis: Redis, path: str, body: bytes, field: str
) -> None:
    before = await redis.dbsize()
    response = await api.post(path, content=body, headers=CLIENT)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
    assert await redis.dbsize() == before


async def test_unknown_route_and_method_are_json_errors(api: httpx.AsyncClient) -> None:
    missing = await api.get("/nothing-here", headers=CLIENT)
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "path"
    wrong = await api.delete("/jobs", headers=CLIENT)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["field"] == "method"
