"""Hand-written hostile input for every route that reads a body, a query or an id.

Each case names the exact answer (a 4xx and the field at fault) and checks that Redis is
byte-for-byte unchanged afterwards (every key, DUMPed). tests/integration/test_hub_validation.py
covers the submission fields of POST /jobs one by one; this file covers what it does not:
the same attacks on /jobs/batch and /jobs/{id}/cancel, both parse paths (an unbound token
decodes straight from bytes with msgspec, a customer-bound one through orjson and a dict),
content types, bodies at and over the byte limit with and without Content-Length, 10,000-
and 1,000,000-level nesting, invalid UTF-8, non-object bodies, out-of-range numbers,
duplicate keys, query parameters and hostile ids. What needs a real socket (huge headers,
slow clients, bytes on the wire) is in tests/e2e/test_security_transport.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.factories import job as job_request
from tests.hub_support import ACME, CLIENT, OPERATOR, hub_client, hub_settings

REQUEST_LIMIT = 64 * 1024
PAYLOAD_LIMIT = 4096
CANCEL_LIMIT = 64 * 1024  # hub/routes_jobs.py _optional_body
PENDING = "victim-job"  # a pending job every case could damage, were it let through

JOB = {"service_type": "comfyui", "payload": {"prompt": "a cat"}}
# (route, a body it accepts)
BODY_ROUTES = [
    ("/jobs", JOB),
    ("/jobs/batch", {"jobs": [JOB, JOB]}),
    (f"/jobs/{PENDING}/cancel", {"reason": "no longer needed"}),
]
ROUTE_IDS = ["submit", "batch", "cancel"]
TOKENS = {"unbound": CLIENT, "customer-bound": ACME}


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
async def api(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    broker = BrokerSettings(max_payload_bytes=PAYLOAD_LIMIT)
    settings = hub_settings(redis_url, broker, max_request_bytes=REQUEST_LIMIT)
    async with hub_client(settings) as client:
        await Broker(redis, broker).submit(job_request("comfyui", id=PENDING, customer_id="acme"))
        yield client


async def state(redis: Redis) -> dict[bytes | str, bytes | None]:
    """Every key and its serialised value: equal before and after means nothing was written."""
    return {key: await redis.dump(key) for key in sorted(await redis.keys("*"))}


def post_kwargs(body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return {"content": body, "headers": headers}


async def refused(
    api: httpx.AsyncClient,
    redis: Redis,
    method: str,
    url: str,
    status: int,
    field: str | None,
    *,
    auth: dict[str, str] = OPERATOR,
    **kwargs: Any,
) -> httpx.Response:
    """Send, assert the exact error answer, and that nothing was written."""
    before = await state(redis)
    headers = {**auth, **kwargs.pop("headers", {})}
    response = await api.request(method, url, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if field is not None:
        assert error["field"] == field, error
    assert error["message"]
    assert await state(redis) == before, "a refused request wrote to Redis"
    return response


def json_headers(auth: dict[str, str]) -> dict[str, str]:
    return {**auth, "Content-Type": "application/json"}


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]", leaf: bytes = b"1") -> bytes:
    return open_ * depth + leaf + close * depth


def in_route(route: str, inner: bytes) -> bytes:
    """`inner` (raw JSON) where each route reads free-form or typed content."""
    if route == "/jobs":
        return b'{"service_type":"comfyui","payload":{"deep":' + inner + b"}}"
    if route == "/jobs/batch":
        return b'{"jobs":[{"service_type":"comfyui","payload":{"deep":' + inner + b"}}]}"
    return b'{"reason":' + inner + b"}"


def chunks(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """A body httpx sends without Content-Length (chunked): only the streamed count stops it."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def achunks(body: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks(body):
        yield chunk


# -- malformed JSON -----------------------------------------------------------------------------


def malformed(ok: Any) -> dict[str, bytes]:
    """Broken variants of a body the route accepts: the syntax error is the only fault."""
    good = orjson.dumps(ok)
    return {
        "truncated": good[:-1],
        "trailing garbage": good + b" {}",
        "trailing comma": good[:-1] + b",}",
        "single quotes": good.replace(b'"', b"'"),
        "unquoted key": good.replace(b'{"', b"{", 1),
        "comment": good[:-1] + b"/* hi */}",
        "byte order mark": b"\xef\xbb\xbf" + good,
        "nul byte": good + b"\x00",
        "bare word": b"comfyui",
        "whitespace only": b" \t\r\n ",
    }


MALFORMED = list(malformed(JOB))


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(
    ("route", "ok", "kind"),
    [
        pytest.param(route, ok, kind, id=f"{name}-{kind}")
        for (route, ok), name in zip(BODY_ROUTES, ROUTE_IDS, strict=True)
        for kind in MALFORMED
        # an empty cancel body means "the default reason"
        if not (name == "cancel" and kind == "whitespace only")
    ],
)
async def test_malformed_json(
    api: httpx.AsyncClient, redis: Redis, route: str, ok: Any, kind: str, token: str
) -> None:
    body = malformed(ok)[kind]
    await refused(api, redis, "POST", route, 400, "body", auth=TOKENS[token], **post_kwargs(body))


# -- content types ------------------------------------------------------------------------------

WRONG_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/html",
]


@pytest.mark.parametrize(("route", "ok"), BODY_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("content_type", WRONG_TYPES)
async def test_wrong_content_type_is_415(
    api: httpx.AsyncClient, redis: Redis, route: str, ok: Any, content_type: str
) -> None:
    """Even with a valid JSON body: the browser form types must never reach a route."""
    kwargs = post_kwargs(orjson.dumps(ok), content_type)
    await refused(api, redis, "POST", route, 415, "Content-Type", **kwargs)


@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
async def test_real_form_posts_are_refused(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any
) -> None:
    form = {"data": {"service_type": "comfyui", "reason": "x"}}
    await refused(api, redis, "POST", route, 415, "Content-Type", **form)
    files: dict[str, Any] = {
        "files": {"upload": ("job.json", orjson.dumps(JOB), "application/json")}
    }
    await refused(api, redis, "POST", route, 415, "Content-Type", **files)


@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
async def test_without_content_type_the_body_must_still_be_json(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any
) -> None:
    """A missing Content-Type is let through (clients that forget it), but the body is
    still parsed as JSON: a urlencoded form without its header is a 400."""
    kwargs = post_kwargs(b"service_type=comfyui&reason=x", None)
    await refused(api, redis, "POST", route, 400, "body", **kwargs)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain; charset=json",
        "multipart/form-data; boundary=json",
        "application/x-www-form-urlencoded; x=json",
    ],
)
async def test_form_types_with_json_in_a_parameter_are_415(
    api: httpx.AsyncClient, redis: Redis, content_type: str
) -> None:
    kwargs = post_kwargs(orjson.dumps(JOB), content_type)
    await refused(api, redis, "POST", "/jobs", 415, "Content-Type", **kwargs)


# -- empty and non-object bodies ----------------------------------------------------------------


async def test_empty_batch_body(api: httpx.AsyncClient, redis: Redis) -> None:
    await refused(api, redis, "POST", "/jobs/batch", 400, "body", **post_kwargs(b""))
    await refused(api, redis, "POST", "/jobs/batch", 400, "jobs", **post_kwargs(b'{"jobs":[]}'))


NOT_OBJECTS = {
    "list": b"[]",
    "number": b"42",
    "negative": b"-1",
    "null": b"null",
    "string": b'"comfyui"',
    "true": b"true",
    "false": b"false",
}


@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("body", NOT_OBJECTS.values(), ids=NOT_OBJECTS.keys())
async def test_a_body_that_is_not_an_object(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any, body: bytes
) -> None:
    """400 from both parse paths, naming the same field."""
    answers = [
        await refused(api, redis, "POST", route, 400, None, auth=auth, **post_kwargs(body))
        for auth in TOKENS.values()
    ]
    fields = {r.json()["error"]["field"] for r in answers}
    assert fields <= {"", "body"}, fields
    assert len(fields) == 1, fields


# -- size limits --------------------------------------------------------------------------------


def padded(doc: Any, size: int) -> bytes:
    """`doc` as JSON, followed by insignificant whitespace up to exactly `size` bytes."""
    body = orjson.dumps(doc)
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("route", "ok", "limit"),
    [
        ("/jobs", JOB, REQUEST_LIMIT),
        ("/jobs/batch", {"jobs": [JOB]}, REQUEST_LIMIT),
        (f"/jobs/{PENDING}/cancel", {"reason": "x"}, CANCEL_LIMIT),
    ],
    ids=ROUTE_IDS,
)
async def test_body_limit_is_exact(
    api: httpx.AsyncClient, redis: Redis, route: str, ok: Any, limit: int, streamed: bool
) -> None:
    """One byte over the limit is a 413, with or without Content-Length; exactly at the
    limit is accepted."""
    over = padded(ok, limit + 1)
    content: Any = achunks(over) if streamed else over
    kwargs = {"content": content, "headers": {"Content-Type": "application/json"}}
    await refused(api, redis, "POST", route, 413, "body", **kwargs)
    at = padded(ok, limit)
    content = achunks(at) if streamed else at
    response = await api.post(
        route, content=content, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    assert response.status_code in (200, 201), response.text


async def test_a_huge_body_is_refused_before_it_is_read(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    """A declared 1 GiB body is refused on its Content-Length: the hub reads none of it."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1024):
            sent += 1
            yield b" " * (1024 * 1024)

    kwargs: dict[str, Any] = {
        "content": body(),
        "headers": {"Content-Type": "application/json", "Content-Length": str(1024**3)},
    }
    await refused(api, redis, "POST", "/jobs", 413, "body", **kwargs)
    assert sent <= 1


# -- nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize(
    "inner",
    [nested(10_000), nested(10_000, b'{"a":', b"}")],
    ids=["10k-arrays", "10k-objects"],
)
async def test_ten_thousand_levels(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any, inner: bytes, token: str
) -> None:
    """A 4xx, never a RecursionError: inside the free-form payload (or the typed reason)."""
    response = await refused(
        api,
        redis,
        "POST",
        route,
        400,
        None,
        auth=TOKENS[token],
        **post_kwargs(in_route(route, inner)),
    )
    assert response.json()["error"]["field"] in ("body", "payload", "jobs[0].payload", "reason")


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
async def test_the_whole_body_ten_thousand_levels_deep(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any, token: str
) -> None:
    await refused(
        api, redis, "POST", route, 400, None, auth=TOKENS[token], **post_kwargs(nested(10_000))
    )


@pytest.mark.parametrize("token", TOKENS)
async def test_a_million_levels_under_the_default_limit(
    redis_url: str, redis: Redis, token: str
) -> None:
    """2 MB of brackets fits the default 10 MiB request limit: still a clean 400."""
    async with hub_client(hub_settings(redis_url)) as api:
        for inner in (nested(1_000_000), nested(1_000_000, b'{"a":', b"}")):
            body = in_route("/jobs", inner)
            await refused(
                api, redis, "POST", "/jobs", 400, None, auth=TOKENS[token], **post_kwargs(body)
            )


# -- encodings and numbers ----------------------------------------------------------------------

INVALID_UTF8 = {
    "lone continuation": b"\x80",
    "0xff": b"\xff\xfe",
    "overlong slash": b"\xc0\xaf",
    "utf-16 surrogate as utf-8": b"\xed\xa0\x80",
    "truncated sequence": b"\xe2\x82",
    "latin-1 text": "caf\xe9".encode("latin-1"),
}


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(("route", "_ok"), BODY_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_invalid_utf8(
    api: httpx.AsyncClient, redis: Redis, route: str, _ok: Any, bad: bytes, token: str
) -> None:
    """In a string value and in a key: the JSON parser refuses it (400 body)."""
    for body in (in_route(route, b'"' + bad + b'"'), b'{"' + bad + b'": 1}'):
        await refused(
            api, redis, "POST", route, 400, "body", auth=TOKENS[token], **post_kwargs(body)
        )


def job_with(fragment: bytes) -> bytes:
    return b'{"service_type":"comfyui",' + fragment + b"}"


# (case, body, the fields either parser may name: msgspec validates as it parses and names
# the field, orjson stops at the number and names the body)
OUT_OF_RANGE = [
    ("priority 1e400", job_with(b'"priority":1e400'), {"priority", "body"}),
    ("priority 2^64", job_with(b'"priority":18446744073709551616'), {"priority"}),
    ("priority -2^63-1", job_with(b'"priority":-9223372036854775809'), {"priority"}),
    ("timeout 1e400", job_with(b'"timeout_seconds":1e400'), {"timeout_seconds", "body"}),
    ("timeout -1e400", job_with(b'"timeout_seconds":-1e400'), {"timeout_seconds", "body"}),
    ("timeout underflows to 0", job_with(b'"timeout_seconds":1e-400'), {"timeout_seconds"}),
    ("max_retries 1e400", job_with(b'"max_retries":1e400'), {"max_retries", "body"}),
    ("payload 1e400", job_with(b'"payload":{"x":1e400}'), {"payload[...]", "body"}),
    ("payload -1e400", job_with(b'"payload":{"x":-1e400}'), {"payload[...]", "body"}),
    ("NaN literal", job_with(b'"payload":{"x":NaN}'), {"body"}),
    ("Infinity literal", job_with(b'"payload":{"x":Infinity}'), {"body"}),
    ("-Infinity literal", job_with(b'"timeout_seconds":-Infinity'), {"body"}),
    ("nan literal", job_with(b'"priority":nan'), {"body"}),
    ("hex number", job_with(b'"priority":0x10'), {"body"}),
    ("leading zero", job_with(b'"priority":007'), {"body"}),
    ("plus sign", job_with(b'"priority":+5'), {"body"}),
]


@pytest.mark.parametrize("token", TOKENS)
@pytest.mark.parametrize(
    ("body", "fields"), [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE]
)
async def test_numbers_out_of_range(
    api: httpx.AsyncClient, redis: Redis, body: bytes, fields: set[str], token: str
) -> None:
    kwargs = post_kwargs(body)
    response = await refused(api, redis, "POST", "/jobs", 400, None, auth=TOKENS[token], **kwargs)
    assert response.json()["error"]["field"] in fields


@pytest.mark.parametrize("token", TOKENS)
async def test_extreme_but_valid_numbers_round_trip(api: httpx.AsyncClient, token: str) -> None:
    payload = {"max": 1.7976931348623157e308, "min": -1.7976931348623157e308, "tiny": 5e-324}
    response = await api.post("/jobs", json={**JOB, "payload": payload}, headers=TOKENS[token])
    assert response.status_code == 201, response.text
    got = await api.get(f"/jobs/{response.json()['id']}", headers=OPERATOR)
    assert got.json()["payload"] == payload


@pytest.mark.parametrize("deadline", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_extreme_deadline_is_refused(
    api: httpx.AsyncClient, redis: Redis, deadline: str
) -> None:
    body = orjson.dumps({**JOB, "deadline": deadline})
    await refused(api, redis, "POST", "/jobs", 400, "deadline", auth=CLIENT, **post_kwargs(body))


# -- duplicate keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", TOKENS)
async def test_duplicate_keys_last_one_wins_on_both_paths(
    api: httpx.AsyncClient, token: str
) -> None:
    body = b'{"service_type":"first","service_type":"second","payload":{"k":1,"k":2}}'
    response = await api.post("/jobs", content=body, headers=json_headers(TOKENS[token]))
    assert response.status_code == 201, response.text
    job = (await api.get(f"/jobs/{response.json()['id']}", headers=OPERATOR)).json()
    assert (job["service_type"], job["payload"]) == ("second", {"k": 2})


async def test_a_duplicate_customer_id_cannot_smuggle_another_customer(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    """A customer-bound token submits for its own customer whatever the body repeats."""
    for body in (
        b'{"service_type":"comfyui","customer_id":"acme","customer_id":"globex"}',
        b'{"service_type":"comfyui","customer_id":"globex","customer_id":"acme"}',
    ):
        response = await api.post("/jobs", content=body, headers=json_headers(ACME))
        assert response.status_code in (201, 403), response.text
        if response.status_code == 201:
            assert response.json()["customer_id"] == "acme"
    ids = [key async for key in redis.scan_iter("job:*")]
    customers = {await redis.hget(key, "customer_id") for key in ids}
    assert customers <= {b"acme"}, customers


@pytest.mark.parametrize(
    "body",
    [
        job_with(b'"priority":200,"priority":1'),
        job_with(b'"payload":{"n":18446744073709551616}'),
    ],
    ids=["duplicate-invalid-then-valid", "integer-over-64-bits"],
)
async def test_both_parse_paths_give_the_same_answer(api: httpx.AsyncClient, body: bytes) -> None:
    statuses = []
    for auth in TOKENS.values():
        response = await api.post("/jobs", content=body, headers=json_headers(auth))
        statuses.append(response.status_code)
    assert statuses[0] == statuses[1], statuses


# -- query parameters ---------------------------------------------------------------------------

BAD_QUERIES = [
    ("/jobs?bogus=1", "bogus"),
    (f"/jobs?token={CLIENT['Authorization'][7:]}", "token"),
    ("/jobs?limit=0", "limit"),
    ("/jobs?limit=501", "limit"),
    ("/jobs?limit=-1", "limit"),
    ("/jobs?limit=1e2", "limit"),
    ("/jobs?limit=99999999999999999999999", "limit"),
    ("/jobs?status=%FF", "status"),
    ("/jobs?status=pending%00", "status"),
    ("/jobs?service_type=..%2F..", "service_type"),
    ("/jobs?customer_id=%7Bacme%7D", "customer_id"),
    ("/jobs?cursor=garbage", "cursor"),
    ("/jobs?cursor=" + "9" * 5000, "cursor"),
    (f"/jobs/{PENDING}?wait=nan", "wait"),
    (f"/jobs/{PENDING}?wait=inf", "wait"),
    (f"/jobs/{PENDING}?wait=-1", "wait"),
    (f"/jobs/{PENDING}?wait=1e400", "wait"),
    (f"/jobs/{PENDING}?wait=61", "wait"),
    (f"/jobs/{PENDING}?wait=soon", "wait"),
]


@pytest.mark.parametrize(("url", "field"), BAD_QUERIES, ids=[q[0] for q in BAD_QUERIES])
async def test_bad_query_parameters(
    api: httpx.AsyncClient, redis: Redis, url: str, field: str
) -> None:
    await refused(api, redis, "GET", url, 400, field)


async def test_query_parameters_never_override_the_body_or_the_token(
    api: httpx.AsyncClient,
) -> None:
    """Submission fields come from the body and the token, never from the query string."""
    response = await api.post(
        "/jobs?priority=100&customer_id=globex&service_type=evil&id=chosen",
        json={"service_type": "comfyui"},
        headers=ACME,
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["service_type"], job["customer_id"], job["priority"]) == ("comfyui", "acme", 50)
    assert job["id"] != "chosen"


# -- hostile ids --------------------------------------------------------------------------------

# Bare dot segments (`/jobs/..`) are normalised away by httpx before they are sent: the
# transport tests send them raw.
HOSTILE_IDS = [
    "..%2F..%2Fstats",
    "%2Fetc%2Fpasswd",
    "a%7Bb%7D",
    "%7Bjobs%7D:pending",
    "*",
    "job-%2A",
    "a%7Cb",
    "%00",
    "x%0D%0ASet-Cookie:%20a=b",
    "%FF%FE",
    "x" * 10_000,
    "%20" + PENDING,
    PENDING + "%20",
    PENDING.upper(),
]
ID_ROUTES = [
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}/events"),
    ("POST", "/jobs/{}/cancel"),
    ("POST", "/jobs/{}/retry"),
    ("GET", "/workers/{}"),
    ("POST", "/workers/{}/pause"),
    ("POST", "/workers/{}/resume"),
    ("POST", "/workers/{}/drain"),
]


@pytest.mark.parametrize(("method", "template"), ID_ROUTES, ids=[f"{m} {t}" for m, t in ID_ROUTES])
async def test_hostile_ids_are_404_and_touch_nothing(
    api: httpx.AsyncClient, redis: Redis, method: str, template: str
) -> None:
    """Traversal, hash tags, globs, separators, control characters: no such job (or no such
    route, when a decoded `/` splits the path) and nothing written, the victim job included."""
    for job_id in HOSTILE_IDS:
        response = await refused(api, redis, method, template.format(job_id), 404, None)
        assert response.json()["error"]["field"] in ("id", "path"), job_id


async def test_another_customers_job_is_invisible_to_a_bound_token(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await Broker(redis, BrokerSettings()).submit(
        job_request("comfyui", id="globex-job", customer_id="globex")
    )
    for method, url in (
        ("GET", "/jobs/globex-job"),
        ("GET", "/jobs/globex-job/events"),
        ("POST", "/jobs/globex-job/cancel"),
    ):
        await refused(api, redis, method, url, 404, "id", auth=ACME)
    # The same id from acme is acme's own (`acme~globex-job`): it neither fails nor
    # touches globex's job.
    before = await redis.hgetall("job:globex-job")
    body = orjson.dumps({**JOB, "id": "globex-job"})
    created = await api.post("/jobs", content=body, headers=json_headers(ACME))
    assert (created.status_code, created.json()["id"]) == (201, "acme~globex-job")
    assert await redis.hgetall("job:globex-job") == before


async def test_ids_in_the_job_page_are_escaped(api: httpx.AsyncClient) -> None:
    response = await api.get("/ui/jobs/%3Cimg%20src=x%20onerror=alert(1)%3E%22'")
    assert response.status_code == 200
    assert "<img" not in response.text
    assert "onerror=alert(1)&gt;&#34;&#39;" in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "value",
    ["a b", "x" * 65, "<script>", "id\x7f", "ok;drop"],
    ids=["space", "long", "html", "del", "semicolon"],
)
async def test_a_hostile_request_id_is_replaced(api: httpx.AsyncClient, value: str) -> None:
    response = await api.get("/health", headers={"X-Request-ID": value})
    echoed = response.headers["x-request-id"]
    assert echoed != value
    assert len(echoed) == 16
    assert echoed.isalnum()


@pytest.mark.parametrize(
    "key",
    ["", "k" * 257, "tab\tkey", "nul\x00", "del\x7f"],
    ids=["empty", "long", "tab", "nul", "del"],
)
async def test_bad_idempotency_keys(api: httpx.AsyncClient, redis: Redis, key: str) -> None:
    body = post_kwargs(orjson.dumps(JOB))
    body["headers"]["Idempotency-Key"] = key
    await refused(api, redis, "POST", "/jobs", 400, "Idempotency-Key", **body)
