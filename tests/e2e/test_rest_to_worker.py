"""The whole chain: a client submits over the hub's REST API, a worker process pulls the job
and drives its AI service, and the client reads the result back over REST."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.hub_support import CLIENT_TOKEN, hub_settings, running_hub
from tests.process_support import registered, worker_process

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


async def test_simulation_job_through_rest(
    redis: Redis, broker: Broker, redis_url: str, broker_settings: BrokerSettings
) -> None:
    async with running_hub(hub_settings(redis_url, broker_settings)) as hub, hub.client() as http:
        with worker_process(redis_url, "rest-w1"):
            await registered(redis, broker, "rest-w1")
            body = {
                "service_type": "simulation",
                "payload": {"steps": 3, "step_ms": 10, "result": "ok"},
            }
            created = await http.post("/jobs", json=body, headers=AUTH)
            assert created.status_code == 201
            job_id = created.json()["id"]
            done = await http.get(f"/jobs/{job_id}?wait=20", headers=AUTH)
    job = done.json()
    assert job["status"] == "completed"
    assert job["worker_id"] == "rest-w1"
    assert job["result"] == {"steps": 3, "result": "ok", "worker_service": "simulation"}


async def test_comfyui_job_through_rest_returns_the_image(
    redis: Redis, broker: Broker, redis_url: str, broker_settings: BrokerSettings
) -> None:
    graph: dict[str, Any] = copy.deepcopy(
        load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]
    )
    graph["2"]["inputs"]["steps"] = 3
    with FakeComfyUI() as comfy:
        async with (
            running_hub(hub_settings(redis_url, broker_settings)) as hub,
            hub.client() as http,
        ):
            with worker_process(redis_url, "comfy-w1", SERVICES="comfyui", COMFYUI_URL=comfy.url):
                await registered(redis, broker, "comfy-w1")
                created = await http.post(
                    "/jobs",
                    json={"service_type": "comfyui", "payload": {"workflow": graph}},
                    headers=AUTH,
                )
                assert created.status_code == 201
                done = await http.get(f"/jobs/{created.json()['id']}?wait=30", headers=AUTH)
    job = done.json()
    assert job["status"] == "completed", job
    images = job["result"]["images"]
    assert len(images) == 1
    assert images[0]["content_type"] == "image/png"
    assert images[0]["base64"].startswith("iVBORw0KGgo")  # a PNG, fetched through /view
    assert len(comfy.prompts) == 1
