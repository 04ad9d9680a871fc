"""Who may call what, derived from the routes the apps actually serve, and what leaks.

- Every route of the hub app (HTTP, mount, WebSocket) must be classified here as public,
  client, operator or legacy socket; a new route that is not fails the build, and the
  classification must agree with the `x-role` the OpenAPI document advertises.
- Every protected route, with real ids (a pending job, a failed job, a live worker) and a
  body that would be accepted, is refused for each wrong credential: none, a wrong or
  truncated token, the right token in the wrong place (query string, cookie, another
  header), a wrong token before the right one; a client token on operator routes is 403.
  Redis is byte-for-byte unchanged after all of them. (WebSocket refusals need a real
  socket: tests/e2e/test_security_transport.py.)
- During a session of requests carrying secret tokens and a payload marker (REST, SSE,
  WebSockets of both protocols, bad input, a real worker running the job and its dashboard,
  a Redis password), no log record formatted by shared.logs contains a secret or the marker.
- The worker dashboard: every POST route refuses missing and wrong tokens without acting,
  and its page and /api/status never show the token or the Redis password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from hub.app import create_app
from hub.openapi import build_document
from hub.settings import ClientToken
from shared.broker import Broker
from shared.job import JobStatus
from shared.logs import JsonFormatter, TextFormatter, request_id_var
from shared.settings import BrokerSettings
from shared.webhook_queue import FailedAttempt, RetryPolicy
from shared.worker_grants import Grant, GrantStore
from tests.factories import job as job_request
from tests.helpers import redis_command, wait_until
from tests.hub_support import (
    ACME_TOKEN,
    CLIENT_TOKEN,
    OPERATOR,
    OPERATOR_TOKEN,
    capabilities,
    claim,
    hub_client,
    hub_settings,
    recv_json,
    recv_until,
    running_hub,
    start_worker,
    ws_connect,
)
from tests.worker_support import finished, running_worker, sim, worker_settings
from worker.dashboard.app import create_app as create_dashboard

# -- the classification -------------------------------------------------------------------------

PUBLIC = {
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/favicon.ico"),
    ("GET", "/ui/jobs/{job_id}"),
    ("MOUNT", "/static"),
}
CLIENT_ROUTES = {
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("POST", "/jobs/batch"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("GET", "/jobs/{job_id}/events"),
}
OPERATOR_ROUTES = {
    ("POST", "/jobs/{job_id}/retry"),
    ("GET", "/workers"),
    ("GET", "/workers/{worker_id}"),
    ("POST", "/workers/{worker_id}/pause"),
    ("POST", "/workers/{worker_id}/resume"),
    ("POST", "/workers/{worker_id}/drain"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/dashboard/data"),
    ("GET", "/dashboard/series"),
    ("GET", "/dashboard/jobs/{job_id}/timeline"),
    ("POST", "/gateway/grants"),
    ("GET", "/gateway/grants"),
    ("POST", "/gateway/grants/{worker_id}/revoke"),
    ("GET", "/webhooks/deliveries"),
    ("POST", "/webhooks/deliveries/{delivery_id}/redeliver"),
}
SOCKETS = {
    ("WS", "/ws"),  # refused at the handshake without a valid token
    ("WS", "/ws/client/{conn_id}"),  # original protocol: accepts, then reports and closes
    ("WS", "/ws/monitor/{conn_id}"),  # ... and needs the operator token
    ("WS", "/gateway/worker"),  # gateway tokens only (tests/integration/test_gateway_*.py)
}
# The original emp-redis REST routes (hub/routes_legacy.py): client routes with the legacy
# sockets' rules (?token= too) and the original's error shape.
LEGACY_REST = {
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs/{job_id}"),
}
PROTECTED = CLIENT_ROUTES | OPERATOR_ROUTES
SSE = ("GET", "/jobs/{job_id}/events")  # the one HTTP route that takes ?token=


def route_keys(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            keys |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, WebSocketRoute):
            keys.add(("WS", route.path))
        elif isinstance(route, Mount):
            keys.add(("MOUNT", route.path))
        else:
            keys.add(("?", repr(route)))
    return keys


HUB_ROUTES = route_keys(create_app(hub_settings("redis://127.0.0.1:1/0")).routes)


def test_every_hub_route_is_classified() -> None:
    classes = [PUBLIC, CLIENT_ROUTES, OPERATOR_ROUTES, SOCKETS, LEGACY_REST]
    unclassified = HUB_ROUTES - set().union(*classes)
    assert unclassified == set(), f"classify these routes in {__name__}: {unclassified}"
    stale = set().union(*classes) - HUB_ROUTES
    assert stale == set(), f"no longer served: {stale}"
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            assert not a & b


def test_the_api_document_advertises_the_same_roles() -> None:
    roles = {"public": PUBLIC, "client": CLIENT_ROUTES | LEGACY_REST, "operator": OPERATOR_ROUTES}
    for path, methods in build_document()["paths"].items():
        for method, op in methods.items():
            assert (method.upper(), path) in roles[op["x-role"]], (method, path, op["x-role"])


# -- refusals -----------------------------------------------------------------------------------

PENDING, FAILED, WORKER = "victim-pending", "victim-failed", "victim-worker"
DEAD_LETTER = "1-0.job"  # a dead-lettered webhook delivery
PATH_VALUES = {"job_id": PENDING, "worker_id": WORKER, "delivery_id": DEAD_LETTER}
# Retry needs a failed job; the SSE stream of a pending job would never end.
FINISHED_PATH_VALUES = {"job_id": FAILED}
VALID_BODIES: dict[str, Any] = {
    "/jobs": {"service_type": "comfyui", "payload": {"prompt": "a cat"}},
    "/jobs/batch": {"jobs": [{"service_type": "comfyui"}]},
    "/jobs/{job_id}/cancel": {"reason": "because"},
    "/gateway/grants": {"worker_id": "gateway-worker-1", "services": ["comfyui"]},
}

# (name, headers as a list of pairs (duplicates allowed), query string, expected status)
Credential = tuple[str, list[tuple[str, str | bytes]], str, int]
BAD_CREDENTIALS: list[Credential] = [
    ("no token", [], "", 401),
    ("wrong token", [("Authorization", "Bearer wrong-token-0001")], "", 401),
    ("truncated token", [("Authorization", f"Bearer {OPERATOR_TOKEN[:-1]}")], "", 401),
    ("extended token", [("Authorization", f"Bearer {OPERATOR_TOKEN}0")], "", 401),
    ("token case changed", [("Authorization", f"Bearer {OPERATOR_TOKEN.upper()}")], "", 401),
    ("empty bearer", [("Authorization", "Bearer ")], "", 401),
    ("scheme only", [("Authorization", "Bearer")], "", 401),
    ("no scheme", [("Authorization", OPERATOR_TOKEN)], "", 401),
    ("basic scheme", [("Authorization", f"Basic {OPERATOR_TOKEN}")], "", 401),
    ("token scheme", [("Authorization", f"Token {OPERATOR_TOKEN}")], "", 401),
    ("latin-1 bytes token", [("Authorization", b"Bearer t\xf6ken-\xff\xfe")], "", 401),
    ("in a cookie", [("Cookie", f"token={OPERATOR_TOKEN}")], "", 401),
    ("in X-Api-Key", [("X-Api-Key", OPERATOR_TOKEN)], "", 401),
    ("in X-Auth-Token", [("X-Auth-Token", OPERATOR_TOKEN)], "", 401),
    (
        "wrong token first",
        [
            ("Authorization", "Bearer wrong-token-0001"),
            ("Authorization", f"Bearer {OPERATOR_TOKEN}"),
        ],
        "",
        401,
    ),
    ("wrong query token", [], "token=wrong-token-0001", 401),
    ("client token", [("Authorization", f"Bearer {CLIENT_TOKEN}")], "", 403),
    ("customer-bound token", [("Authorization", f"Bearer {ACME_TOKEN}")], "", 403),
]
QUERY_TOKEN: Credential = ("operator token in the query", [], f"token={OPERATOR_TOKEN}", 401)


def as_bytes(headers: list[tuple[str, str | bytes]]) -> list[tuple[bytes, bytes]]:
    """The header pairs as the wire carries them: httpx encodes a str name or value as ASCII
    itself, and types a header list as all str or all bytes, which a latin-1 value rules out."""
    return [
        (name.encode("ascii"), value if isinstance(value, bytes) else value.encode("ascii"))
        for name, value in headers
    ]


def fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


async def seed(broker: Broker) -> None:
    caps = await start_worker(broker, WORKER, capabilities(services=["seedsvc"]))
    await broker.submit(job_request("seedsvc", id=FAILED, max_retries=0))
    c = await claim(broker, WORKER, caps)
    await broker.fail(WORKER, c.job.id, c.token, "boom", retryable=False)
    await broker.submit(job_request("comfyui", id=PENDING))
    await GrantStore(broker.redis, broker.keys).issue(Grant(worker_id=WORKER, services=["seedsvc"]))
    refused = FailedAttempt(
        DEAD_LETTER, "http://10.0.0.1/", b"{}", "completed", FAILED, None, "refused", None, False
    )
    await broker.webhooks.defer([refused], RetryPolicy(1000, 1000, 60_000))


async def state(redis: Redis) -> dict[bytes | str, bytes | None]:
    return {key: await redis.dump(key) for key in sorted(await redis.keys("*"))}


@pytest.fixture
async def api(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    broker_settings = BrokerSettings()
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        await seed(Broker(redis, broker_settings))
        yield client


def cases_for(key: tuple[str, str]) -> list[Credential]:
    cases = [c for c in BAD_CREDENTIALS if c[3] == 401 or key in OPERATOR_ROUTES]
    # The SSE stream may take ?token= (EventSource cannot send headers); nothing else may.
    return cases if key == SSE else [*cases, QUERY_TOKEN]


@pytest.mark.parametrize("key", sorted(LEGACY_REST), ids=" ".join)
async def test_legacy_rest_routes_refuse_every_wrong_credential_the_original_way(
    api: httpx.AsyncClient, redis: Redis, key: tuple[str, str]
) -> None:
    method, template = key
    url = template.replace("{job_id}", PENDING)
    body = {"job_type": "comfyui", "payload": {"prompt": "a cat"}} if method == "POST" else None
    before = await state(redis)
    wrong: dict[str, Any] = {}
    for name, headers, query, status in BAD_CREDENTIALS:
        if status != 401:
            continue
        response = await api.request(
            method,
            f"{url}?{query}" if query else url,
            headers=httpx.Headers(as_bytes([*headers, ("Content-Type", "application/json")])),
            content=orjson.dumps(body) if body is not None else None,
        )
        if response.status_code != 401 or set(response.json()) != {"detail"}:
            wrong[name] = (response.status_code, response.text[:200])
    assert wrong == {}
    assert await state(redis) == before, "a refused request changed Redis"
    ok = await api.request(
        method,
        f"{url}?token={CLIENT_TOKEN}",
        headers={"Content-Type": "application/json"},
        content=orjson.dumps(body) if body is not None else None,
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("key", sorted(HUB_ROUTES & PROTECTED), ids=" ".join)
async def test_protected_routes_refuse_every_wrong_credential(
    api: httpx.AsyncClient, redis: Redis, key: tuple[str, str]
) -> None:
    method, template = key
    finished_job = template.endswith(("/retry", "/events"))
    values = FINISHED_PATH_VALUES if finished_job else PATH_VALUES
    url = fill(template, values)
    body = VALID_BODIES.get(template)
    before = await state(redis)
    wrong: dict[str, Any] = {}
    for name, headers, query, status in cases_for(key):
        response = await api.request(
            method,
            f"{url}?{query}" if query else url,
            headers=httpx.Headers(as_bytes([*headers, ("Content-Type", "application/json")])),
            content=orjson.dumps(body) if body is not None else None,
        )
        error = (
            response.json().get("error", {})
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != status or error.get("field") != "Authorization":
            wrong[name] = (response.status_code, response.text[:200])
        elif status == 401 and response.headers.get("www-authenticate") != "Bearer":
            wrong[name] = "no WWW-Authenticate: Bearer"
    assert wrong == {}
    assert await state(redis) == before, "a refused request changed Redis"
    # The same request with the right token does act: the refusals above were not vacuous.
    ok = await api.request(
        method,
        url,
        headers={**OPERATOR, "Content-Type": "application/json"},
        content=orjson.dumps(body) if body is not None else None,
    )
    assert ok.status_code < 400, ok.text


async def test_a_customer_bound_token_cannot_act_on_another_customers_job(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    """404 (not 403: it must not even learn the job exists) and nothing changes."""
    before = await state(redis)
    acme = {"Authorization": f"Bearer {ACME_TOKEN}"}
    for method, url in (
        ("GET", f"/jobs/{PENDING}"),
        ("POST", f"/jobs/{PENDING}/cancel"),
        ("GET", f"/jobs/{PENDING}/events"),
    ):
        response = await api.request(method, url, headers=acme)
        assert response.status_code == 404, (method, url, response.text)
    listed = await api.get("/jobs", headers=acme)
    assert [j["id"] for j in listed.json()["jobs"]] == []
    assert (await api.get("/jobs?customer_id=globex", headers=acme)).status_code == 403
    assert await state(redis) == before


# -- tokens and payloads never reach the logs ---------------------------------------------------

SECRET = uuid.uuid4().hex[:12]
OP_SECRET = f"op-{SECRET}-operator"
CLIENT_SECRET = f"cl-{SECRET}-client"
BOUND_SECRET = f"cb-{SECRET}-bound"
WRONG_SECRET = f"wr-{SECRET}-wrong"
WORKER_SECRET = f"wk-{SECRET}-worker"
REDIS_PASSWORD = f"pw-{SECRET}-redis"
MARKER = f"payload-marker-{SECRET}"
SECRETS = (OP_SECRET, CLIENT_SECRET, BOUND_SECRET, WRONG_SECRET, WORKER_SECRET, REDIS_PASSWORD)
# Every logger that could see a request: ours, the server's, the WebSocket library's.
LOGGERS = (
    "",
    "hub",
    "shared",
    "worker",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "websockets",
    "asyncio",
)


@contextlib.asynccontextmanager
async def redis_user(redis: Redis, redis_url: str) -> AsyncIterator[str]:
    """The test Redis with a password: an ACL user, removed afterwards. Yields its URL."""
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or parts.password:
        pytest.skip("needs a TCP test Redis without its own password")
    user = f"emp-sec-{SECRET}"
    await redis_command(
        redis, "ACL", "SETUSER", user, "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all"
    )
    try:
        host = parts.hostname or "127.0.0.1"
        netloc = f"{user}:{REDIS_PASSWORD}@{host}:{parts.port}"
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        await redis_command(redis, "ACL", "DELUSER", user)


# The test's own clients log what they send; that is not the hub's log.
CLIENT_SIDE = ("httpx", "httpcore", "websockets.client")
_FRAME_TRACE = re.compile(r"^[<>] (TEXT|BINARY|CONT) ")


def frame_trace(record: logging.LogRecord) -> bool:
    """uvicorn's WebSocket frame trace at DEBUG (test_websocket_frames_stay_out_of_debug_logs)."""
    return record.name == "uvicorn.error" and bool(_FRAME_TRACE.match(record.getMessage()))


def formatted_lines(records: list[logging.LogRecord]) -> Iterator[str]:
    """Every server-side record, as both shared.logs formatters write it."""
    token = request_id_var.set("r1")
    try:
        for record in records:
            if record.name.startswith(CLIENT_SIDE):
                continue
            for formatter in (JsonFormatter(), TextFormatter()):
                yield formatter.format(record)
    finally:
        request_id_var.reset(token)


def leaks(records: list[logging.LogRecord]) -> list[str]:
    return [
        f"{secret}: {line[:300]}"
        for line in formatted_lines(records)
        for secret in (*SECRETS, MARKER)
        if secret in line
    ]


async def bad_requests(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    """Refused submissions that carry the marker where a careless error message would echo it."""
    json_type = {**auth, "Content-Type": "application/json"}
    for body in (
        b'{"service_type": "comfyui", "payload": {"p": "' + MARKER.encode() + b'"',
        orjson.dumps({"service_type": "comfyui", "priority": MARKER}),
        orjson.dumps({"service_type": MARKER + " X"}),
        orjson.dumps({"service_type": "comfyui", MARKER: 1}),
        orjson.dumps({"service_type": "comfyui", "id": MARKER + " x"}),
        orjson.dumps({"service_type": "comfyui", "payload": {"p": MARKER * 3000}}),  # 413
        b'{"service_type": "comfyui", "payload": {"p": "' + MARKER.encode() + b'\xff"}}',
        b'{"service_type": "comfyui", "payload": ' + b"[" * 5000 + MARKER.encode(),
    ):
        response = await http.post("/jobs", content=body, headers=json_type)
        assert 400 <= response.status_code < 500, response.text
    response = await http.post(
        "/jobs", content=MARKER, headers={**auth, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415


async def test_tokens_and_payloads_never_reach_the_logs(
    redis: Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    async with redis_user(redis, redis_url) as secret_url:
        settings = dataclasses.replace(
            hub_settings(secret_url),
            client_tokens=(ClientToken(CLIENT_SECRET), ClientToken(BOUND_SECRET, "acme")),
            operator_tokens=(OP_SECRET,),
            max_request_bytes=64 * 1024,
        )
        op = {"Authorization": f"Bearer {OP_SECRET}"}
        client = {"Authorization": f"Bearer {CLIENT_SECRET}"}
        bound = {"Authorization": f"Bearer {BOUND_SECRET}"}
        wrong = {"Authorization": f"Bearer {WRONG_SECRET}"}
        payload = {"steps": 2, "step_ms": 1, "prompt": MARKER}
        async with running_hub(settings) as hub, hub.client() as http:
            # REST: submissions, reads, the SSE stream with a query token, refusals.
            created = await http.post(
                "/jobs", json={"service_type": "simulation", "payload": payload}, headers=client
            )
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            batch = await http.post(
                "/jobs/batch",
                json={"jobs": [{"service_type": "nobody", "payload": payload}]},
                headers=bound,
            )
            assert batch.status_code == 201
            held = batch.json()["jobs"][0]["id"]
            assert MARKER in (await http.get(f"/jobs/{held}", headers=bound)).text
            for headers in (op, client, bound):
                await bad_requests(http, headers)
            assert (await http.get("/stats", headers=wrong)).status_code == 401
            assert (await http.get(f"/jobs/{held}/events?token={WRONG_SECRET}")).status_code == 401
            assert (
                await http.post(f"/jobs/{held}/cancel", json={"reason": MARKER}, headers=bound)
            ).status_code == 200
            assert (await http.get(f"/jobs/{held}/events?token={BOUND_SECRET}")).status_code == 200
            # WebSockets, both protocols, tokens in the query string.
            async with ws_connect(f"{hub.ws_url}/ws?token={OP_SECRET}") as ws:
                await recv_json(ws)
                await ws.send(orjson.dumps({"type": "subscribe", "job_id": job_id}).decode())
                await recv_until(ws, lambda m: m["type"] == "snapshot")
                await ws.send(orjson.dumps({"type": MARKER}).decode())
                await recv_until(ws, lambda m: m["type"] == "error")
            async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_SECRET}") as legacy:
                await recv_json(legacy)
                await legacy.send(
                    orjson.dumps(
                        {"type": "submit_job", "job_type": "nobody", "payload": payload}
                    ).decode()
                )
                await recv_until(legacy, lambda m: m["type"] == "job_accepted")
                await legacy.send(
                    orjson.dumps(
                        {"type": "submit_job", "job_type": "nobody", "priority": MARKER}
                    ).decode()
                )
                await recv_until(legacy, lambda m: m["type"] == "error")
            async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={WRONG_SECRET}") as refused:
                await recv_json(refused)
            # A real worker with a Redis password and a dashboard token runs the job.
            wsettings = worker_settings(secret_url, "sec-worker", HUB_OPERATOR_TOKEN=WORKER_SECRET)
            async with running_worker(wsettings) as worker:
                broker = Broker(redis, BrokerSettings())
                assert (await finished(broker, job_id)).status == JobStatus.COMPLETED
                dashboard = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=create_dashboard(worker)),
                    base_url="http://localhost",
                )
                async with dashboard:
                    assert (await dashboard.post("/api/pause", headers=wrong)).status_code == 401
                    assert (
                        await dashboard.post(
                            "/api/pause", headers={"Authorization": f"Bearer {WORKER_SECRET}"}
                        )
                    ).status_code == 200
                    assert (
                        await dashboard.post(
                            "/api/resume", headers={"Authorization": f"Bearer {WORKER_SECRET}"}
                        )
                    ).status_code == 200
                    status = (await dashboard.get("/api/status")).text
                    assert WORKER_SECRET not in status
                    assert REDIS_PASSWORD not in status
    assert any(r.name == "hub.access" for r in caplog.records), "expected access log lines"
    assert any(r.name.startswith("worker") for r in caplog.records), "expected worker log lines"
    found = leaks([r for r in caplog.records if not frame_trace(r)])
    assert found == [], "\n".join(found)


async def test_websocket_frames_stay_out_of_debug_logs(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    async with (
        running_hub(hub_settings(redis_url)) as hub,
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as legacy,
    ):
        await recv_json(legacy)
        prompt = f"p-{SECRET}"  # short enough for the whole frame to be traced
        message = orjson.dumps({"type": "submit_job", "job_type": "x", "payload": {"p": prompt}})
        await legacy.send(message.decode())
        await recv_until(legacy, lambda m: m["type"] == "job_accepted")
    found = [line for line in formatted_lines(caplog.records) if prompt in line]
    assert found == [], "\n".join(found)


# -- the worker dashboard -----------------------------------------------------------------------

DASHBOARD_TOKEN = f"dash-{SECRET}-token"
DASHBOARD_READS = {("GET", "/"), ("GET", "/api/status"), ("GET", "/static/{name}")}
DASHBOARD_ACTIONS = {
    ("POST", "/api/jobs/{job_id}/cancel"),
    ("POST", "/api/pause"),
    ("POST", "/api/resume"),
}


@contextlib.asynccontextmanager
async def dashboard_of_real_worker(
    redis: Redis, redis_url: str, token: str | None
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    """A real worker (Redis URL with a password), its dashboard in-process, and a job it is
    running (1,000 steps of 20 ms: it stays running for the test)."""
    async with redis_user(redis, redis_url) as secret_url:
        env = {"HUB_OPERATOR_TOKEN": token} if token else {}
        settings = worker_settings(secret_url, "dash-worker", **env)
        async with running_worker(settings) as worker:
            broker = Broker(redis, BrokerSettings())
            job_id = (
                await broker.submit(job_request("simulation", payload=sim(steps=1000, step_ms=20)))
            ).job_id
            await wait_until(lambda: job_id in worker.running, message="the job running")
            transport = httpx.ASGITransport(
                app=create_dashboard(worker), client=("127.0.0.1", 50000)
            )
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://localhost"
                ) as http:
                    yield worker, http, job_id
            finally:  # the worker stops at once instead of waiting out its shutdown grace
                await broker.cancel(job_id)


def test_every_dashboard_route_is_classified() -> None:
    from tests.worker_support import make_worker

    worker = make_worker(worker_settings("redis://127.0.0.1:1/0", "classify"))
    keys = route_keys(create_dashboard(worker).routes)
    assert keys == DASHBOARD_READS | DASHBOARD_ACTIONS, keys - (DASHBOARD_READS | DASHBOARD_ACTIONS)
    assert all(method == "GET" for method, _ in DASHBOARD_READS)


DASHBOARD_BAD = [
    ("no token", {}, "", 401),
    ("wrong token", {"Authorization": "Bearer wrong-dashboard-token"}, "", 401),
    ("the hub's operator token", {"Authorization": f"Bearer {OPERATOR_TOKEN}"}, "", 401),
    ("truncated", {"Authorization": f"Bearer {DASHBOARD_TOKEN[:-1]}"}, "", 401),
    ("basic", {"Authorization": f"Basic {DASHBOARD_TOKEN}"}, "", 401),
    ("query", {}, f"token={DASHBOARD_TOKEN}", 401),
    ("cookie", {"Cookie": f"token={DASHBOARD_TOKEN}"}, "", 401),
]


async def test_dashboard_actions_refuse_wrong_tokens_on_a_real_worker(
    redis: Redis, redis_url: str
) -> None:
    async with dashboard_of_real_worker(redis, redis_url, DASHBOARD_TOKEN) as (
        worker,
        http,
        job_id,
    ):
        state_key = f"worker:{worker.id}"
        for method, template in sorted(DASHBOARD_ACTIONS):
            url = fill(template, {"job_id": job_id})
            for name, headers, query, status in DASHBOARD_BAD:
                response = await http.request(
                    method, f"{url}?{query}" if query else url, headers=headers
                )
                assert response.status_code == status, (url, name, response.text)
                assert response.json()["error"]["field"] == "Authorization"
        assert job_id in worker.running
        assert not worker.running[job_id].cancel.is_set()
        assert await redis.hget(state_key, "state") == b"active"
        page = (await http.get("/")).text
        status_page = (await http.get("/api/status")).text
        for text in (page, status_page):
            assert DASHBOARD_TOKEN not in text
            assert REDIS_PASSWORD not in text
        assert orjson.loads(status_page)["worker"]["redis"].startswith("redis://***@")


async def test_dashboard_actions_are_refused_without_a_configured_token(
    redis: Redis, redis_url: str
) -> None:
    async with dashboard_of_real_worker(redis, redis_url, None) as (worker, http, job_id):
        for method, template in sorted(DASHBOARD_ACTIONS):
            for headers in (
                {},
                {"Authorization": "Bearer "},
                {"Authorization": "Bearer anything-at-all"},
            ):
                response = await http.request(
                    method, fill(template, {"job_id": job_id}), headers=headers
                )
                assert response.status_code == 403, response.text
        assert job_id in worker.running
        assert not worker.running[job_id].cancel.is_set()
        assert await redis.hget(f"worker:{worker.id}", "state") == b"active"
        assert REDIS_PASSWORD not in (await http.get("/api/status")).text
