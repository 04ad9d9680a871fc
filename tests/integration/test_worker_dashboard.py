"""The per-worker dashboard: page, JSON API, the token-guarded actions, and the embedded server.

Most tests drive `create_app` with a small stand-in worker through httpx's ASGITransport, on
the test's event loop (no server, no Redis; Starlette 1.10's TestClient warns when used with
httpx rather than httpx2, and the app has no lifespan to run). The server tests start uvicorn
for real, and the last test wires the dashboard to a real running Worker and the test Redis.
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.capabilities import Capabilities
from shared.config import ConfigError
from shared.job import Job, JobStatus
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from tests.factories import job as job_request
from tests.helpers import wait_until
from tests.worker_support import finished, running_worker, sim, status_is, worker_settings
from worker.connectors.base import Health
from worker.dashboard.app import create_app
from worker.dashboard.server import DashboardServer, bind_dashboard_socket
from worker.dashboard.snapshot import job_stats, percentile
from worker.hardware.info import GpuInfo, HardwareInfo
from worker.job_runner import HeldJob, Outcome
from worker.settings import WorkerSettings

TOKEN = "op-token-7c1e9d"
REDIS_PASSWORD = "hunter2-redis-pw"
CLAIM_TOKEN = "claim-token-5f2a"
SERVICE_PASSWORD = "svc-pw-31337"
API_KEY = "sk-live-abcdef"
PAGE_IDS = (
    "status", "state", "uptime", "heartbeat", "slots", "success-rate", "p50", "p95", "jobs-count",
    "pause", "resume", "token-form", "token", "notice", "running-jobs", "history", "resources",
    "cpu", "ram", "gpus", "connectors", "capabilities", "updated", "scheduling",
)  # fmt: skip
ACTIONS = [
    ("/api/jobs/job-1/cancel", "cancel_job", ["job-1"]),
    ("/api/pause", "set_state", ["paused"]),
    ("/api/resume", "set_state", ["active"]),
]


# -- a stand-in worker --------------------------------------------------------------------------


def make_job(job_id: str, service: str = "simulation", customer: str | None = "acme") -> Job:
    return Job(
        id=job_id,
        service_type=service,
        customer_id=customer,
        priority=50,
        effective_priority=50,
        status=JobStatus.ACTIVE,
        created_at=int(time.time() * 1000),
        attempts=1,
    )


H200 = GpuInfo(
    index=0,
    uuid="GPU-0000",
    name="NVIDIA H200",
    memory_total_bytes=150_754_820_096,
    memory_free_bytes=100_000_000_000,
    memory_used_bytes=50_754_820_096,
)
HARDWARE = HardwareInfo(
    gpus=(H200,),
    driver_version="580.00",
    cuda_version="13.0",
    cpu_cores=16,
    ram_bytes=128 * 2**30,
    ram_available_bytes=100 * 2**30,
    disk_free_bytes=None,
    disk_path=None,
    gpu_error=None,
)


class FakeWorker:
    """The attributes and methods the dashboard uses, and a record of the actions it took."""

    def __init__(self, *, operator_token: str | None = TOKEN) -> None:
        self.settings = WorkerSettings(
            redis=RedisSettings(url=f"redis://default:{REDIS_PASSWORD}@redis.internal:6380/0"),
            worker_id="gpu-box-1-gpu0",
            services=("simulation", "comfyui"),
            broker=BrokerSettings(),
            operator_token=operator_token,
            concurrent_jobs=2,
            env={"HUB_OPERATOR_TOKEN": operator_token or "", "COMFYUI_AUTH": SERVICE_PASSWORD},
        )
        self.id = self.settings.worker_id
        self.started = time.time() - 3725
        self.status = "busy"
        self.state = "active"
        job = make_job("job-1")
        self.running = {
            "job-1": HeldJob(job=job, token=CLAIM_TOKEN, progress=42.0, message="step 2/5")
        }
        self.history: collections.deque[Outcome] = collections.deque(maxlen=100)
        self.health = {
            "simulation": Health(ok=True, detail="ready"),
            "comfyui": Health(
                ok=False,
                detail=f"cannot reach http://admin:{SERVICE_PASSWORD}@comfy:8188/system_stats",
                info={"version": "0.3.40", "api_key": API_KEY},
            ),
        }
        self.capabilities = msgspec.convert(
            {
                "services": ["simulation"],
                "hardware": {"cpu_cores": 16, "ram_gb": 128.0},
                "models": ["sdxl", "flux"],
                "warm_models": ["sdxl"],
            },
            Capabilities,
        )
        self.heartbeat_age: float | None = 0.4
        self.hardware = HARDWARE
        self.dashboard_url: str | None = None
        self.calls: list[tuple[str, str]] = []
        self.failure: Exception | None = None

    def utilization(self) -> dict[str, Any]:
        return {
            "cpu_percent": 12.5,
            "ram_total_gb": 128.0,
            "ram_used_gb": 28.0,
            "ram_percent": 21.9,
            "gpus": [
                {
                    "index": 0,
                    "utilization_gpu": 87,
                    "memory_used_gb": 47.3,
                    "memory_total_gb": 140.4,
                }
            ],
            "gpu_error": None,
        }

    async def cancel_job(self, job_id: str) -> bool:
        self.calls.append(("cancel_job", job_id))
        if self.failure is not None:
            raise self.failure
        return job_id in self.running

    async def set_state(self, state: str) -> None:
        self.calls.append(("set_state", state))
        if self.failure is not None:
            raise self.failure
        self.state = state


@pytest.fixture
def fake() -> FakeWorker:
    return FakeWorker()


def app_client(fake: FakeWorker) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(fake), client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


@pytest.fixture
async def client(fake: FakeWorker) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(fake) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the page -----------------------------------------------------------------------------------


async def test_page_renders_the_worker_with_stable_ids(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    fake.history.appendleft(Outcome("job-0", "failed", "model exploded", 2.5))
    response = await client.get("/", headers=bearer(TOKEN))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    for element_id in PAGE_IDS:
        assert f'id="{element_id}"' in html, element_id
    assert 'data-job-id="job-1"' in html
    assert '<progress max="100" value="42.0">' in html
    assert "model exploded" in html
    assert "NVIDIA H200" in html
    assert "1h 02m" in html  # uptime
    assert '<dt title="loaded now, most recently used first">Warm models</dt><dd>sdxl</dd>' in html
    assert "/static/dashboard.js" in html


async def test_page_escapes_what_clients_and_services_wrote(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    fake.running["job-1"].message = "<script>alert(1)</script>"
    html = (await client.get("/", headers=bearer(TOKEN))).text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_answers_forbid_framing_and_inline_scripts(client: httpx.AsyncClient) -> None:
    for path in ("/", "/api/status", "/static/dashboard.js"):
        headers = (await client.get(path)).headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


async def test_static_files_are_served_and_nothing_else(client: httpx.AsyncClient) -> None:
    js = await client.get("/static/dashboard.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    assert "/api/status" in js.text
    assert (
        (await client.get("/static/dashboard.css")).headers["content-type"].startswith("text/css")
    )
    for path in ("/static/nope.js", "/static/..%2Fserver.py", "/static/%2E%2E%2F..%2Fruntime.py"):
        assert (await client.get(path)).status_code == 404, path


# -- the JSON API -------------------------------------------------------------------------------


async def test_status_describes_the_worker(client: httpx.AsyncClient, fake: FakeWorker) -> None:
    body = (await client.get("/api/status", headers=bearer(TOKEN))).json()
    assert set(body) >= {
        "worker",
        "controls",
        "running",
        "history",
        "stats",
        "resources",
        "hardware",
        "connectors",
        "capabilities",
    }
    worker = body["worker"]
    assert (worker["id"], worker["status"], worker["state"]) == ("gpu-box-1-gpu0", "busy", "active")
    # Started 3725 s before the fixture was made; no more than has passed since, by the clock
    # the dashboard reads (an order, not a wall-clock bound).
    assert 3725 <= worker["uptime_seconds"] <= round(time.time() - fake.started, 1)
    assert (worker["heartbeat_age_seconds"], worker["heartbeat_late"]) == (0.4, False)
    assert worker["slots"] == {"total": 2, "busy": 1}
    assert worker["pools"] == ["default"]  # POOLS: the pools it claims from
    assert body["controls"] == {"enabled": True, "reason": None}
    [running] = body["running"]
    assert running["job_id"] == "job-1"
    assert (running["progress"], running["message"], running["attempt"]) == (42.0, "step 2/5", 2)
    assert running["cancelling"] is False
    assert body["resources"]["cpu_percent"] == 12.5
    assert body["resources"]["gpus"][0]["name"] == "NVIDIA H200"
    assert [c["name"] for c in body["connectors"]] == ["comfyui", "simulation"]
    assert [c["ok"] for c in body["connectors"]] == [False, True]
    assert body["capabilities"]["models"] == ["sdxl", "flux"]
    assert body["capabilities"]["warm_models"] == ["sdxl"]  # loaded now
    assert body["hardware"]["gpus"][0]["name"] == "NVIDIA H200"


async def test_the_scheduling_policies_in_force_are_shown(fake: FakeWorker) -> None:
    broker = BrokerSettings(scheduling_policies=("affinity", "fair"), affinity_max_delay=45.0)
    fake.settings = dataclasses.replace(fake.settings, broker=broker)
    async with app_client(fake) as client:
        scheduling = (await client.get("/api/status")).json()["worker"]["scheduling"]
        html = (await client.get("/")).text
    assert scheduling["policies"] == ["affinity", "fair"]  # the order they apply in
    assert scheduling["affinity_max_delay_seconds"] == 45.0
    assert '<span id="scheduling" title="priority window 10 points; affinity at most 45.0 s' in html
    assert ">affinity, fair</span>" in html


async def test_a_worker_without_policies_shows_strict_order(fake: FakeWorker) -> None:
    broker = BrokerSettings.from_env({"SCHEDULING_POLICIES": "none"})
    fake.settings = dataclasses.replace(fake.settings, broker=broker)
    async with app_client(fake) as client:
        scheduling = (await client.get("/api/status")).json()["worker"]["scheduling"]
    assert (scheduling["policies"], scheduling["summary"]) == ([], "strict order")


async def test_a_worker_applies_every_policy_by_default(client: httpx.AsyncClient) -> None:
    scheduling = (await client.get("/api/status")).json()["worker"]["scheduling"]
    assert scheduling["policies"] == ["fit", "affinity", "fair"]


async def test_status_keeps_the_last_100_jobs_with_their_statistics(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    for n in range(120):  # oldest first; the worker puts the newest at the left
        status = "failed" if n % 10 == 0 else "completed"
        fake.history.appendleft(Outcome(f"job-{n}", status, None, float(n)))
    body = (await client.get("/api/status", headers=bearer(TOKEN))).json()
    assert len(body["history"]) == 100
    assert body["history"][0]["job_id"] == "job-119"
    stats = body["stats"]
    assert stats["jobs"] == 100
    assert stats["counts"] == {"completed": 90, "failed": 10}
    assert stats["success_rate"] == 90.0
    assert (stats["p50_seconds"], stats["p95_seconds"]) == (69.0, 115.0)


async def test_long_errors_are_clipped(client: httpx.AsyncClient, fake: FakeWorker) -> None:
    fake.history.appendleft(Outcome("job-0", "failed", "x" * 5000, 1.0))
    error = (await client.get("/api/status", headers=bearer(TOKEN))).json()["history"][0]["error"]
    assert len(error) == 500
    assert error.endswith("\u2026")


async def test_status_without_history_or_heartbeat_has_empty_statistics(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    fake.heartbeat_age = None
    fake.running.clear()
    body = (await client.get("/api/status")).json()
    assert body["stats"] == {
        "jobs": 0,
        "counts": {},
        "success_rate": None,
        "p50_seconds": None,
        "p95_seconds": None,
    }
    assert body["worker"]["heartbeat_late"] is True
    assert "No job running." in (await client.get("/")).text


async def test_nothing_secret_is_shown(client: httpx.AsyncClient, fake: FakeWorker) -> None:
    fake.history.appendleft(
        Outcome("job-0", "failed", f"POST https://bot:{SERVICE_PASSWORD}@api.example/x: 500", 1.0)
    )
    page, status = (await client.get("/")).text, (await client.get("/api/status")).text
    for text in (page, status):
        for secret in (TOKEN, REDIS_PASSWORD, CLAIM_TOKEN, SERVICE_PASSWORD, API_KEY):
            assert secret not in text, secret
    body = (await client.get("/api/status")).json()
    assert body["worker"]["redis"] == "redis://***@redis.internal:6380/0"
    assert body["connectors"][0]["info"] == {"version": "0.3.40", "api_key": "***"}


async def test_a_failing_hardware_reading_does_not_break_the_page(fake: FakeWorker) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("NVML exploded")

    fake.utilization = broken  # type: ignore[method-assign]
    async with app_client(fake) as client:
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/api/status")).json()["resources"][
            "error"
        ] == "RuntimeError: NVML exploded"


# -- actions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "method", "args"), ACTIONS)
async def test_actions_are_refused_when_no_token_is_configured(
    path: str, method: str, args: list[str]
) -> None:
    fake = FakeWorker(operator_token=None)
    async with app_client(fake) as client:
        response = await client.post(path, headers=bearer("anything"))
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["field"] == "Authorization"
        assert "HUB_OPERATOR_TOKEN must be set" in error["message"]
        assert (await client.get("/api/status")).json()["controls"]["enabled"] is False
    assert fake.calls == []


@pytest.mark.parametrize(("path", "method", "args"), ACTIONS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        bearer("wrong"),
        bearer(TOKEN + "x"),
    ],
    ids=["missing", "empty", "no-scheme", "basic", "wrong", "longer"],
)
async def test_actions_need_the_right_bearer_token(
    client: httpx.AsyncClient,
    fake: FakeWorker,
    path: str,
    method: str,
    args: list[str],
    headers: dict[str, str],
) -> None:
    response = await client.post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["field"] == "Authorization"
    assert fake.calls == []


@pytest.mark.parametrize(("path", "method", "args"), ACTIONS)
async def test_actions_with_the_right_token_reach_the_worker(
    client: httpx.AsyncClient, fake: FakeWorker, path: str, method: str, args: list[str]
) -> None:
    response = await client.post(path, headers=bearer(TOKEN))
    assert response.status_code == 200
    assert fake.calls == [(method, *args)]
    if method == "set_state":
        assert response.json() == {"state": args[0]}
        assert fake.state == args[0]
    else:
        assert response.json() == {"job_id": "job-1", "cancelled": True}


async def test_the_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    assert (
        await client.post("/api/pause", headers={"Authorization": f"bearer {TOKEN}"})
    ).status_code == 200


async def test_cancelling_an_unknown_job_is_404(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    response = await client.post("/api/jobs/no-such-job/cancel", headers=bearer(TOKEN))
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "job_id"
    assert fake.calls == [("cancel_job", "no-such-job")]


async def test_unknown_job_is_not_revealed_without_a_token(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    assert (await client.post("/api/jobs/no-such-job/cancel")).status_code == 401
    assert fake.calls == []


async def test_an_unreachable_redis_is_a_503_in_the_error_shape(
    client: httpx.AsyncClient, fake: FakeWorker
) -> None:
    fake.failure = ConnectionError("connection refused")
    response = await client.post("/api/pause", headers=bearer(TOKEN))
    assert response.status_code == 503
    assert "Redis is unreachable" in response.json()["error"]["message"]


async def test_wrong_method_and_unknown_path_answer_json_errors(client: httpx.AsyncClient) -> None:
    for response, status in (
        (await client.get("/api/pause"), 405),
        (await client.get("/api/nope"), 404),
    ):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"field", "message"}


# -- helpers ------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 95) == 95.0
    stats = job_stats([Outcome("a", "completed", None, 1.0), Outcome("b", "cancelled", None, 9.0)])
    assert (stats["success_rate"], stats["p95_seconds"]) == (100.0, 1.0)


# -- the embedded server ------------------------------------------------------------------------


def dashboard_settings(fake: FakeWorker, port: int | None = None) -> WorkerSettings:
    return dataclasses.replace(fake.settings, dashboard_port=port, dashboard_host="127.0.0.1")


@pytest.fixture
async def served(fake: FakeWorker) -> AsyncIterator[DashboardServer]:
    server = DashboardServer(fake, dashboard_settings(fake))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_server_picks_a_free_port_serves_and_stops(fake: FakeWorker) -> None:
    sigterm, sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    server = DashboardServer(fake, dashboard_settings(fake))
    url = await server.start()
    try:
        assert url.startswith("http://localhost:")
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        # The worker owns the signals: serving must not replace its handlers.
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == (
            sigterm,
            sigint,
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert 'id="running-jobs"' in page.text
            status = (await http.get("/api/status")).json()
            assert status["worker"]["id"] == fake.id
            assert (await http.post("/api/pause", headers=bearer(TOKEN))).json() == {
                "state": "paused"
            }
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(f"http://127.0.0.1:{port}/api/status")
    await server.stop()  # stopping twice is harmless


async def test_two_dashboards_on_one_box_get_different_ports(
    fake: FakeWorker, served: DashboardServer
) -> None:
    other = DashboardServer(fake, dashboard_settings(fake))
    url = await other.start()
    try:
        assert url != served.url
    finally:
        await other.stop()


async def test_a_fixed_port_is_used_as_given(fake: FakeWorker) -> None:
    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = DashboardServer(fake, dashboard_settings(fake, port))
    assert await server.start() == f"http://localhost:{port}"
    await server.stop()


async def test_a_taken_fixed_port_is_a_clear_startup_error(fake: FakeWorker) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = DashboardServer(fake, dashboard_settings(fake, port))
        with pytest.raises(ConfigError) as caught:
            await server.start()
    assert caught.value.name == "WORKER_DASHBOARD_PORT"
    assert str(port) in str(caught.value)
    await server.stop()  # nothing was started: a no-op


@pytest.mark.parametrize("port", [None, 1511])
def test_an_address_not_on_this_machine_names_the_host_setting(port: int | None) -> None:
    with pytest.raises(ConfigError) as caught:
        bind_dashboard_socket("192.0.2.1", port)  # TEST-NET-1: never a local address
    assert caught.value.name == "WORKER_DASHBOARD_HOST"


# -- against a real worker ----------------------------------------------------------------------


async def test_dashboard_drives_a_real_worker(broker: Broker, redis: Redis, redis_url: str) -> None:
    settings = worker_settings(redis_url, HUB_OPERATOR_TOKEN=TOKEN)
    async with running_worker(settings) as worker:
        dashboard = DashboardServer(worker, settings)
        url = await dashboard.start()
        try:
            async with httpx.AsyncClient(
                base_url=url.replace("localhost", "127.0.0.1"), timeout=5, headers=bearer(TOKEN)
            ) as http:
                long_id = (
                    await broker.submit(
                        job_request("simulation", payload=sim(steps=1000, step_ms=20))
                    )
                ).job_id

                async def shown_running() -> bool:
                    body = (await http.get("/api/status")).json()
                    return any(j["job_id"] == long_id for j in body["running"])

                await wait_until(shown_running, message="the running job on the dashboard")
                cancel = await http.post(f"/api/jobs/{long_id}/cancel", headers=bearer(TOKEN))
                assert cancel.status_code == 200
                assert (await finished(broker, long_id)).status == JobStatus.CANCELLED

                async def in_history() -> bool:
                    body = (await http.get("/api/status")).json()
                    return bool(body["history"]) and body["history"][0]["job_id"] == long_id

                await wait_until(in_history, message="the cancelled job in the history")

                assert (await http.post("/api/pause", headers=bearer(TOKEN))).status_code == 200
                assert await redis.hget(broker.keys.worker(worker.id), "state") == b"paused"
                paused_id = (await broker.submit(job_request("simulation", payload=sim()))).job_id
                await status_is(broker, paused_id, JobStatus.PENDING)
                assert (await http.post("/api/resume", headers=bearer(TOKEN))).status_code == 200
                assert (await finished(broker, paused_id)).status == JobStatus.COMPLETED
                assert (await http.get("/api/status")).json()["worker"]["state"] == "active"
        finally:
            await dashboard.stop()
