"""Fuzz every operation of the hub's OpenAPI document with generated requests, valid and not.

Schemathesis reads /openapi.json and generates requests (path parameters, query, headers and
JSON bodies, both schema-conforming and deliberately broken: wrong types, out-of-range
numbers, missing fields, raw bytes); hypothesis drives them, a bounded number per operation
so the whole file stays well under 30 s. The requests go to the app in-process (httpx's
ASGITransport on the test's event loop), so an unhandled exception fails the test with its
traceback instead of being hidden behind a 500.

Properties, for every generated request:
- never a 5xx, and the hub still answers /health afterwards;
- every 4xx carries the project's error shape and wrote nothing: Redis DBSIZE and the
  pending queue's size are unchanged;
- a 2xx submission is fully readable: GET /jobs/{id} shows the job as submitted, and after
  any POST every job in Redis parses and renders and every queued id has its job;
- without a valid token, a protected operation is always 401 (a client token on an operator
  operation: 403) and nothing at all is written.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.core.result import Err, Ok

from hub.openapi import build_document
from shared.broker import Broker
from shared.job import JobRequest
from shared.settings import BrokerSettings
from shared.text import as_text
from shared.validation import convert
from tests.hub_support import (
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    capabilities,
    claim,
    hub_client,
    hub_settings,
    start_worker,
)

REQUEST_LIMIT = 64 * 1024
PAYLOAD_LIMIT = 8 * 1024
EXAMPLES = 15  # per operation without a body (their only input is the path)
BODY_EXAMPLES = 50  # per operation with a body, and generation mode
REQUEST_TIMEOUT = 5.0  # a request that takes longer is a hang (SSE on a live job would)

DOCUMENT = build_document()


def _rfc3339() -> st.SearchStrategy[str]:
    """RFC 3339 date-times that lean on the edges: the first and last years datetime can
    hold, the epoch, 2038, and the widest offsets."""
    year = st.sampled_from([1, 2, 1969, 1970, 2038, 9998, 9999]) | st.integers(1, 9999)
    month_day = st.sampled_from(["01-01", "12-31"]) | st.builds(
        "{:02d}-{:02d}".format, st.integers(1, 12), st.integers(1, 28)
    )
    clock = st.sampled_from(["00:00:00", "23:59:59", "12:00:00.5"])
    offset = st.sampled_from(["Z", "+00:00", "+14:00", "-14:00", "+23:59", "-23:59"])
    return st.builds("{:04d}-{}T{}{}".format, year, month_day, clock, offset)


DATE_TIME_FORMAT = "emp-rfc3339"
schemathesis.openapi.format(DATE_TIME_FORMAT, _rfc3339())


def with_date_time_formats(document: dict[str, Any]) -> dict[str, Any]:
    """The served document types `deadline` as any string (msgspec's schema for datetime
    carries no `format`); the hub accepts RFC 3339 with an offset. Fuzz a copy that says so,
    or the generator would almost never produce a date the hub parses."""
    doc = copy.deepcopy(document)
    for schema in doc["components"]["schemas"].values():
        deadline = schema.get("properties", {}).get("deadline")
        if deadline is not None:
            deadline["anyOf"] = [{"type": "string", "format": DATE_TIME_FORMAT}, {"type": "null"}]
    return doc


T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def loaded(result: Ok[T] | Err[E]) -> T:
    """An operation schemathesis could load; one it could not fails the module with its error."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


SCHEMA = schemathesis.openapi.from_dict(with_date_time_formats(DOCUMENT))
OPERATIONS = {op.label: op for op in map(loaded, SCHEMA.get_all_operations())}
ROLE = {
    f"{method.upper()} {path}": op["x-role"]
    for path, methods in DOCUMENT["paths"].items()
    for method, op in methods.items()
}
SUBMISSIONS = ("POST /jobs", "POST /jobs/batch")
BODY_OPERATIONS = {label for label, op in OPERATIONS.items() if op.body}

# Ids that exist in every fuzzed hub (see `seed`), mixed into generated path parameters so
# the routes are exercised past "no such job" as well.
PENDING, DONE, FAILED, OTHERS = "seed-pending", "seed-done", "seed-failed", "seed-other"
WORKER = "seed-worker"
KNOWN_IDS = {
    "job_id": [PENDING, DONE, FAILED, OTHERS],
    "worker_id": [WORKER],
}
# The SSE stream of a job that is not finished never ends: only finished ids there.
KNOWN_IDS_EVENTS = {"job_id": [DONE, FAILED]}

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TRANSPORT_HEADERS = {"content-length", "transfer-encoding", "host", "connection"}

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=True,  # CI must not flake on a new example: the same examples every run
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one hub serves every example, on purpose
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


# -- the hub under test -------------------------------------------------------------------------


async def seed(broker: Broker) -> None:
    """A completed, a failed and a pending job, another customer's job and a live worker."""
    caps = await start_worker(broker, WORKER, capabilities(services=["seedsvc"]))
    await broker.submit(convert({"service_type": "seedsvc", "id": DONE}, JobRequest))
    c = await claim(broker, WORKER, caps)
    await broker.complete(WORKER, c.job.id, c.token, {"ok": True})
    await broker.submit(
        convert({"service_type": "seedsvc", "id": FAILED, "max_retries": 0}, JobRequest)
    )
    c = await claim(broker, WORKER, caps)
    await broker.fail(WORKER, c.job.id, c.token, "boom", retryable=False)
    await broker.submit(convert({"service_type": "nobody", "id": PENDING}, JobRequest))
    await broker.submit(
        convert({"service_type": "nobody", "id": OTHERS, "customer_id": "globex"}, JobRequest)
    )


@pytest.fixture
async def api(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    broker_settings = BrokerSettings(max_payload_bytes=PAYLOAD_LIMIT)
    settings_ = hub_settings(redis_url, broker_settings, max_request_bytes=REQUEST_LIMIT)
    async with hub_client(settings_) as client:
        await seed(Broker(redis, broker_settings))
        yield client


# -- turning a generated case into a request ----------------------------------------------------


def _header_ok(name: str, value: Any) -> bool:
    if not isinstance(value, str) or not _HEADER_NAME.match(name):
        return False
    if name.lower() in _TRANSPORT_HEADERS or any(c in value for c in "\r\n\0"):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _query_value(value: Any) -> str | list[str]:
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return value if isinstance(value, str) else json.dumps(value)


def request_of(case: Any, auth: str | None) -> dict[str, Any]:
    """httpx keyword arguments for a schemathesis Case; `auth` replaces its Authorization
    (None: the request carries none)."""
    headers = {k: v for k, v in (case.headers or {}).items() if _header_ok(k, v)}
    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    if auth is not None:
        headers["Authorization"] = auth
    content: bytes | None = None
    if not isinstance(case.body, NotSet):
        if isinstance(case.body, bytes):
            content = case.body
        else:  # allow_nan: NaN / Infinity literals are bad input the hub must refuse
            content = json.dumps(case.body, allow_nan=True).encode("utf-8", "surrogatepass")
        headers.setdefault("Content-Type", case.media_type or "application/json")
    query = {k: _query_value(v) for k, v in (case.query or {}).items()}
    return {
        "method": case.method,
        "url": case.formatted_path,
        "params": query,
        "headers": headers,
        "content": content,
    }


def _deadline_out_of_range(value: Any) -> bool:
    """True for a deadline whose UTC instant datetime cannot represent: the hub answers 500
    for it (product bug, pinned by test_security_inputs.py::test_extreme_deadline_*)."""
    if not isinstance(value, str):
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is not None:
            parsed.astimezone(UTC)
    except ValueError:
        return False
    except OverflowError:
        return True
    return False


# -- invariants ---------------------------------------------------------------------------------


async def footprint(redis: Redis) -> tuple[int, int]:
    return int(await redis.dbsize()), int(await redis.zcard("jobs:pending"))


async def assert_every_job_readable(redis: Redis) -> None:
    """No partial job anywhere: every job hash parses and renders, and every queued id has
    one."""
    broker = Broker(redis, BrokerSettings())
    keys = [key.decode() async for key in redis.scan_iter("job:*")]
    for key in keys:
        job = await broker.get(key.removeprefix("job:"))
        assert job is not None, key
        job.to_public()  # what every read route renders
    for job_id in await redis.zrange("jobs:pending", 0, -1):
        assert f"job:{as_text(job_id)}" in keys, job_id


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    if response.request.url.path.startswith("/api/"):
        # The original emp-redis REST routes answer in the original's (FastAPI's) shape.
        assert set(body) <= {"detail", "field"}, body
        assert isinstance(body["detail"], str), body
        assert body["detail"], body
        return
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["field"], str), body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], body


SAME_AS_SENT = ("service_type", "customer_id", "priority", "max_retries", "tags")


async def assert_submission_readable(
    api: httpx.AsyncClient, sent: Any, response: httpx.Response
) -> None:
    """A 2xx submission answered the job(s); each one reads back in full, as submitted when
    it was created (a repeated id answers the job that already had it)."""
    body = response.json()
    batch = isinstance(sent, dict) and "jobs" in body
    answered = body["jobs"] if batch else [body]
    requests = sent["jobs"] if batch else [sent]
    assert len(answered) == len(requests)
    for view, request in zip(answered, requests, strict=True):
        if "error" in view:  # an id taken by a job this token cannot see: nothing written
            continue
        got = await api.get(f"/jobs/{view['id']}", headers=OPERATOR_AUTH)
        assert got.status_code == 200, got.text
        job = got.json()
        assert job["id"] == view["id"]
        created = view["created"] if batch else response.status_code == 201
        if not created:
            continue
        if request.get("id") is not None:
            assert job["id"] == request["id"]
        for field in SAME_AS_SENT:
            if request.get(field) is not None:
                sent_value = request[field]
                if field == "service_type":  # case-insensitive, kept in lower case
                    sent_value = sent_value.lower()
                assert job[field] == sent_value, field
        assert job["payload"] == request.get("payload", {})
        assert job["status"] == "pending"


OPERATOR_AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


async def send(api: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    async with asyncio.timeout(REQUEST_TIMEOUT):
        return await api.request(**request)


def strategy(label: str, mode: GenerationMode, headers: dict[str, str] | None) -> Any:
    op = OPERATIONS[label]
    known = KNOWN_IDS_EVENTS if label.endswith("/events") else KNOWN_IDS
    params = {p.name for p in op.path_parameters}
    variants = [op.as_strategy(generation_mode=mode, headers=headers)]
    for name in params & set(known):
        variants += [
            op.as_strategy(generation_mode=mode, headers=headers, path_parameters={name: v})
            for v in known[name]
        ]
    return st.one_of(variants)


def supports(label: str, mode: GenerationMode) -> bool:
    """Negative generation needs something to break: a body (any string is a valid path
    parameter, and no operation documents query parameters or headers)."""
    return mode is GenerationMode.POSITIVE or bool(OPERATIONS[label].body)


CASES = [
    pytest.param(label, mode, id=f"{label}-{mode.value}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if supports(label, mode)
]


# -- the tests ----------------------------------------------------------------------------------


def test_every_documented_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) == sum(len(m) for m in DOCUMENT["paths"].values())
    assert {c.values[0] for c in CASES} == set(OPERATIONS)


async def test_the_fuzzed_document_is_the_one_served(api: httpx.AsyncClient) -> None:
    served = await api.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(DOCUMENT))


async def check_operator_request(
    api: httpx.AsyncClient, redis: Redis, label: str, case: Any
) -> None:
    request = request_of(case, OPERATOR_AUTH["Authorization"])
    note(f"request: {request!r}")
    before = await footprint(redis)
    response = await send(api, request)
    status = response.status_code
    note(f"answer: {status} {response.text[:500]}")
    assert status < 500
    if 400 <= status < 500:
        assert_error_shape(response)
        assert await footprint(redis) == before, "a refused request wrote to Redis"
    elif label in SUBMISSIONS and status < 300 and not isinstance(case.body, NotSet):
        await assert_submission_readable(api, case.body, response)
    if case.method == "POST":
        await assert_every_job_readable(redis)
    assert (await api.get("/health")).status_code == 200


@pytest.mark.parametrize(("label", "mode"), [c for c in CASES if c.values[0] in BODY_OPERATIONS])
@settings(FUZZ_SETTINGS, max_examples=BODY_EXAMPLES)
@given(data=st.data())
async def test_operator_fuzz_with_bodies(
    api: httpx.AsyncClient, redis: Redis, label: str, mode: GenerationMode, data: st.DataObject
) -> None:
    await check_operator_request(api, redis, label, data.draw(strategy(label, mode, OPERATOR_AUTH)))


@pytest.mark.parametrize(
    ("label", "mode"), [c for c in CASES if c.values[0] not in BODY_OPERATIONS]
)
@settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
@given(data=st.data())
async def test_operator_fuzz(
    api: httpx.AsyncClient, redis: Redis, label: str, mode: GenerationMode, data: st.DataObject
) -> None:
    await check_operator_request(api, redis, label, data.draw(strategy(label, mode, OPERATOR_AUTH)))


UNAUTHORISED = [
    pytest.param(None, 401, id="no-token"),
    pytest.param("Bearer not-a-real-token-9f1c", 401, id="wrong-token"),
    pytest.param(f"Basic {OPERATOR_TOKEN}", 401, id="basic-scheme"),
    pytest.param(f"Bearer {OPERATOR_TOKEN[:-1]}", 401, id="token-prefix"),
    pytest.param(f"Bearer {CLIENT_TOKEN}", 403, id="client-token"),
]


def unauthorised_cases(refusal: int) -> Any:
    labels = sorted(OPERATIONS)
    if refusal == 403:
        labels = [label for label in labels if ROLE[label] == "operator"]
    return st.sampled_from(labels).flatmap(
        lambda label: st.one_of(
            [
                strategy(label, mode, None)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                if supports(label, mode)
            ]
        )
    )


@pytest.mark.parametrize(("auth", "refusal"), UNAUTHORISED)
@settings(FUZZ_SETTINGS, max_examples=len(OPERATIONS) * 4)
@given(data=st.data())
async def test_unauthorised_fuzz(
    api: httpx.AsyncClient, redis: Redis, auth: str | None, refusal: int, data: st.DataObject
) -> None:
    """Every operation, valid and invalid input: refused before any route runs (client
    token: refused on operator operations), and nothing at all is written."""
    before = sorted(await redis.keys("*")), await footprint(redis)
    case = data.draw(unauthorised_cases(refusal), label="case")
    label = f"{case.method} {case.operation.path}"
    request = request_of(case, auth)
    response = await send(api, request)
    if ROLE[label] == "public":
        assert response.status_code < 500, (request, response.text)
    else:
        assert response.status_code == refusal, (request, response.text)
        assert_error_shape(response)
        if not label.split()[1].startswith("/api/"):
            assert response.json()["error"]["field"] == "Authorization"
    assert (sorted(await redis.keys("*")), await footprint(redis)) == before, request


def test_known_bug_filter() -> None:
    assert _deadline_out_of_range("0001-01-01T00:00:00+14:00")
    assert _deadline_out_of_range("9999-12-31T23:59:59-14:00")
    assert not _deadline_out_of_range("0001-01-01T00:00:00Z")
    assert not _deadline_out_of_range("2030-01-01T00:00:00+14:00")
    assert not _deadline_out_of_range("tomorrow")
