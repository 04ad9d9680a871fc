"""Authentication and roles: no token, wrong token, client token on operator routes, open
mode, WebSocket tokens, and that tokens never reach the logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from shared.logs import JsonFormatter, TextFormatter, request_id_var
from shared.settings import BrokerSettings
from tests.hub_support import (
    ACME_TOKEN,
    CLIENT,
    CLIENT_TOKEN,
    OPERATOR,
    OPERATOR_TOKEN,
    hub_client,
    hub_settings,
    recv_json,
    running_hub,
    ws_connect,
)

CLIENT_ROUTES = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("POST", "/jobs/batch"),
    ("GET", "/jobs/j1"),
    ("POST", "/jobs/j1/cancel"),
    ("GET", "/jobs/j1/events"),
]
OPERATOR_ROUTES = [
    ("POST", "/jobs/j1/retry"),
    ("GET", "/workers"),
    ("GET", "/workers/w1"),
    ("POST", "/workers/w1/pause"),
    ("POST", "/workers/w1/resume"),
    ("POST", "/workers/w1/drain"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/dashboard/data"),
]
PUBLIC_ROUTES = [
    "/health",
    "/ready",
    "/openapi.json",
    "/docs",
    "/",
    "/ui/jobs/j1",
    "/static/dashboard.js",
]


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), CLIENT_ROUTES + OPERATOR_ROUTES)
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer wrong-token-123"}, "invalid token"),
        ({"Authorization": f"Basic {CLIENT_TOKEN}"}, "missing bearer token"),
        ({"Authorization": f"Bearer {OPERATOR_TOKEN}x"}, "invalid token"),
    ],
    ids=["none", "wrong", "basic-scheme", "operator-prefix"],
)
async def test_protected_routes_refuse_missing_and_wrong_tokens(
    api: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], message: str
) -> None:
    response = await api.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": {"field": "Authorization", "message": message}}


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
async def test_client_tokens_are_refused_on_operator_routes(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    for token in (CLIENT_TOKEN, ACME_TOKEN):
        response = await api.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403
        assert response.json()["error"]["field"] == "Authorization"


@pytest.mark.parametrize(("method", "path"), CLIENT_ROUTES + OPERATOR_ROUTES)
async def test_operator_token_passes_every_route(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path, headers=OPERATOR)
    assert response.status_code not in (401, 403)
    assert response.status_code < 500


@pytest.mark.parametrize("path", PUBLIC_ROUTES)
async def test_public_routes_need_no_token(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 200


async def test_query_token_only_where_headers_are_impossible(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/jobs?token={CLIENT_TOKEN}")).status_code == 401
    assert (await api.get(f"/stats?token={OPERATOR_TOKEN}")).status_code == 401
    # SSE (EventSource cannot send headers): accepted; the job just does not exist.
    assert (await api.get(f"/jobs/j1/events?token={CLIENT_TOKEN}")).status_code == 404


async def test_open_mode_makes_everyone_operator(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    settings = hub_settings(
        redis_url, broker_settings, auth_enabled=False, client_tokens=(), operator_tokens=()
    )
    async with hub_client(settings) as api:
        assert (await api.get("/stats")).status_code == 200
        assert (await api.post("/jobs", json={"service_type": "x"})).status_code == 201


async def test_websocket_tokens(redis_url: str, broker_settings: BrokerSettings) -> None:
    async with running_hub(hub_settings(redis_url, broker_settings)) as hub:
        for query in ("", "?token=wrong-token-1"):
            with pytest.raises(InvalidStatus) as info:
                async with ws_connect(f"{hub.ws_url}/ws{query}"):
                    pass
            assert info.value.response.status_code == 403
        async with ws_connect(f"{hub.ws_url}/ws?token={CLIENT_TOKEN}") as ws:
            welcome = await recv_json(ws)
            assert welcome == {"type": "welcome", "role": "client", "customer_id": None}
            await ws.send('{"type": "subscribe", "all": true}')
            refused = await recv_json(ws)
            assert refused["type"] == "error"
            assert refused["error"]["field"] == "all"
        # The original protocol accepts, reports the failure in a message, then closes.
        async with ws_connect(f"{hub.ws_url}/ws/client/c1?token=bad-token-99") as ws:
            msg = await recv_json(ws)
            assert msg == {"type": "error", "error": "Authentication failed: Invalid token"}
            await ws.wait_closed()
            assert ws.close_code == 1008
        async with ws_connect(f"{hub.ws_url}/ws/monitor/m1?token={CLIENT_TOKEN}") as ws:
            msg = await recv_json(ws)
            assert msg["type"] == "error"
            assert "not allowed" in msg["error"]


async def test_tokens_never_reach_the_logs(
    redis_url: str, broker_settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_hub(hub_settings(redis_url, broker_settings)) as hub:
        async with hub.client() as http:
            await http.get("/stats", headers=OPERATOR)
            await http.get("/stats", headers={"Authorization": "Bearer wrong-secret-777"})
            await http.post("/jobs", json={"service_type": "x"}, headers=CLIENT)
            await http.get(f"/jobs/j1/events?token={CLIENT_TOKEN}")
            await http.get("/jobs/j1/events?token=wrong-secret-888")
        async with ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ws:
            await recv_json(ws)
        async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={ACME_TOKEN}") as ws:
            await recv_json(ws)
    secrets = (CLIENT_TOKEN, ACME_TOKEN, OPERATOR_TOKEN, "wrong-secret-777", "wrong-secret-888")
    assert caplog.records, "expected access log lines"
    token = request_id_var.set("r1")
    try:
        for record in caplog.records:
            for formatter in (JsonFormatter(), TextFormatter()):
                line = formatter.format(record)
                for secret in secrets:
                    assert secret not in line, line
    finally:
        request_id_var.reset(token)
    access = [r for r in caplog.records if r.name == "hub.access"]
    paths = [getattr(r, "path", "") for r in access]
    assert "/jobs/j1/events" in paths
    assert all("?" not in p for p in paths)
    submit = next(r for r in access if getattr(r, "path", "") == "/jobs")
    line = orjson.loads(JsonFormatter().format(submit))
    assert line["job_id"].startswith("job-")
    assert line["status"] == 201
    assert len(line["request_id"]) == 16
