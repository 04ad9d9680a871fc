"""Health, readiness, stats, metrics, the OpenAPI document and the dashboard pages/feed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from starlette.routing import Mount, Route, WebSocketRoute

from hub.openapi import OPERATIONS, WEBSOCKETS
from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import (
    OPERATOR,
    OPERATOR_TOKEN,
    claim,
    hub_client,
    hub_of_client,
    hub_settings,
    recv_json,
    running_hub,
    start_worker,
    ws_connect,
)


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


async def finish_jobs(api: httpx.AsyncClient, broker: Broker, n: int = 3) -> list[str]:
    ids = []
    caps = await start_worker(broker, "w1")
    for i in range(n):
        body = {"service_type": "comfyui", "priority": 90 if i == 0 else 10}
        ids.append((await api.post("/jobs", json=body, headers=OPERATOR)).json()["id"])
    for _ in range(n - 1):
        got = await claim(broker, "w1", caps)
        await broker.complete("w1", got.job.id, got.token, {"n": 1})
    got = await claim(broker, "w1", caps)
    await broker.fail("w1", got.job.id, got.token, "oops", retryable=False)
    await api.post("/jobs", json={"service_type": "a1111", "priority": 80}, headers=OPERATOR)
    return ids


async def test_health_and_ready(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    ready = await api.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": True, "events": True}
    hub_of_client(api).events.healthy = False
    not_ready = await api.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "unavailable"


async def test_stats(api: httpx.AsyncClient, broker: Broker) -> None:
    await finish_jobs(api, broker)
    stats = (await api.get("/stats", headers=OPERATOR)).json()
    assert stats["jobs"] == {"pending": 1, "active": 0, "completed": 2, "failed": 1, "cancelled": 0}
    assert stats["pending"]["by_service"] == {
        "a1111": {"total": 1, "by_priority": {"urgent": 0, "high": 1, "normal": 0, "low": 0}}
    }
    assert stats["pending"]["by_priority"]["high"] == 1
    for window in ("1m", "5m", "15m"):
        assert stats["throughput"][window]["completed"] == 2
        assert stats["throughput"][window]["failed"] == 1
        assert stats["throughput"][window]["submitted"] == 4
    assert stats["run_ms"]["samples"] == 2
    assert stats["wait_ms"]["p50"] is not None
    assert stats["workers"]["total"] == 1
    assert stats["workers"]["by_state"] == {"active": 1}


async def test_metrics_text(api: httpx.AsyncClient, broker: Broker) -> None:
    await finish_jobs(api, broker)
    hub = hub_of_client(api)
    await wait_until(
        lambda: hub.metrics.events.labels("completed", "default")._value.get() == 2,
        message="event reader saw the completions",
    )
    response = await api.get("/metrics", headers=OPERATOR)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    # No live worker offers a1111: its pending job counts under `other`, not a label of its own.
    # Everything that belongs to a pool says which (the hub serves only `default` here).
    assert 'emp_queue_depth{pool="default",service="other"} 1.0' in text
    assert 'emp_jobs{pool="default",status="completed"} 2.0' in text
    assert 'emp_events_total{pool="default",type="completed"} 2.0' in text
    assert 'emp_events_total{pool="default",type="failed"} 1.0' in text
    assert 'emp_hub_submissions_total{outcome="created"} 4.0' in text
    assert 'emp_workers{pool="default",status="idle"} 1.0' in text
    assert 'emp_job_run_seconds_count{pool="default"} 2.0' in text
    assert re.search(r'emp_job_wait_seconds_count\{pool="default"\} [34]\.0', text)


async def test_openapi_lists_every_route_and_is_valid_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    doc = orjson.loads(response.content)
    assert doc["openapi"] == "3.1.0"
    app = api.hub_app  # type: ignore[attr-defined]
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path != "/favicon.ico"
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(m, p) for m, p, *_ in OPERATIONS}
    assert routes == documented
    for method, path in routes:
        assert method.lower() in doc["paths"][path]
    sockets = {r.path for r in app.routes if isinstance(r, WebSocketRoute)}
    assert sockets == {p.replace("client_id", "conn_id").replace("monitor_id", "conn_id")
                       for p, _ in WEBSOCKETS}  # fmt: skip
    assert any(isinstance(r, Mount) for r in app.routes)
    post = doc["paths"]["/jobs"]["post"]
    schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    job_request = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert job_request["required"] == ["service_type"]
    assert job_request["properties"]["priority"]["anyOf"][0]["maximum"] == 100
    assert "401" in post["responses"]
    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert "/jobs/{job_id}/events" in docs.text
    assert "<script" not in docs.text
    assert "cdn" not in docs.text.lower()


async def test_dashboard_pages_render(api: httpx.AsyncClient) -> None:
    page = await api.get("/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for element in ("token-form", "queue-table", "workers-table", "recent-table",
                    "failed-table", "submit-form", "conn-status", "live-table",
                    "chart-depth", "chart-throughput", "chart-wait"):  # fmt: skip
        assert f'id="{element}"' in page.text
    assert "//cdn" not in page.text
    job = await api.get('/ui/jobs/job-"><b>x')
    assert job.status_code == 200
    assert "job-&#34;&gt;&lt;b&gt;x" in job.text  # escaped, never HTML
    for element in ("job-status", "job-progress", "job-result", "job-images", "job-events",
                    "job-payload", "job-waiting-box"):  # fmt: skip
        assert f'id="{element}"' in job.text
    script = await api.get("/static/dashboard.js")
    assert script.status_code == 200
    assert "sessionStorage" in script.text
    assert ".innerHTML" not in script.text
    charts = await api.get("/static/charts.js")  # SVG drawn with DOM calls, no library
    assert charts.status_code == 200
    assert ".innerHTML" not in charts.text
    assert 'src="/static/charts.js"' in page.text
    assert (await api.get("/static/dashboard.css")).status_code == 200


async def test_dashboard_feed(api: httpx.AsyncClient, broker: Broker) -> None:
    await finish_jobs(api, broker)
    data = (await api.get("/dashboard/data", headers=OPERATOR)).json()
    assert set(data) == {
        "stats", "workers", "pending", "active", "recent", "failed", "fair_share",
    }  # fmt: skip
    assert [w["id"] for w in data["workers"]] == ["w1"]
    assert len(data["recent"]) == 2
    assert data["failed"][0]["error"] == "oops"
    assert data["pending"][0]["service_type"] == "a1111"
    assert all("payload" not in j for j in data["recent"])


async def test_dashboard_live_feed_over_websocket(
    redis_url: str, broker_settings: BrokerSettings, broker: Broker
) -> None:
    async with (
        running_hub(hub_settings(redis_url, broker_settings)) as hub,
        ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ws,
    ):
        await recv_json(ws)
        await ws.send('{"type": "subscribe", "all": true}')
        await recv_json(ws)
        async with hub.client() as http:
            await http.post("/jobs", json={"service_type": "comfyui"}, headers=OPERATOR)
        event = await recv_json(ws)
        assert event["event"]["event"] == "accepted"


async def test_cors_only_for_configured_origins(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    settings = hub_settings(redis_url, broker_settings, cors_origins=("https://app.example",))
    async with hub_client(settings) as api:
        preflight = await api.options(
            "/jobs",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = await api.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    async with hub_client(hub_settings(redis_url, broker_settings)) as api:
        plain = await api.get("/health", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in plain.headers
