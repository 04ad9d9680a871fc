"""The whole chain with an output store: a client submits a ComfyUI job over REST, a worker
process runs it on the fake ComfyUI and stores the image in a real S3-compatible server
(moto, on loopback), and GET /jobs/{id} hands back a URL that downloads it, re-signed by the
hub once the worker's own URL has expired."""

from __future__ import annotations

import copy
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.settings import BrokerSettings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.hub_support import CLIENT_TOKEN, hub_settings, running_hub
from tests.process_support import registered, worker_process
from tests.s3_support import ACCESS_KEY, SECRET_KEY, loopback_s3

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


async def test_comfyui_job_returns_store_urls_that_download_the_image(
    redis: Redis, broker: Broker, redis_url: str, broker_settings: BrokerSettings
) -> None:
    graph: dict[str, Any] = copy.deepcopy(
        load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]
    )
    graph["2"]["inputs"]["steps"] = 2
    with FakeComfyUI() as comfy, loopback_s3() as s3:
        settings = hub_settings(
            redis_url,
            broker_settings,
            output_store=f"s3://{s3.bucket}/outputs",
            output_store_endpoint=s3.endpoint,
            output_store_path_style=True,
            output_store_access_key=ACCESS_KEY,
            output_store_secret_key=SECRET_KEY,
            output_url_ttl=600,
        )
        # The worker signs for 1 s: by the time the client reads the job, the hub re-signs.
        store_env = {**s3.env("outputs"), "OUTPUT_URL_TTL_SECONDS": "1"}
        async with running_hub(settings) as hub, hub.client() as http:
            with worker_process(
                redis_url, "store-w1", SERVICES="comfyui", COMFYUI_URL=comfy.url, **store_env
            ):
                await registered(redis, broker, "store-w1")
                created = await http.post(
                    "/jobs",
                    json={"service_type": "comfyui", "payload": {"workflow": graph}},
                    headers=AUTH,
                )
                assert created.status_code == 201
                job_id = created.json()["id"]
                done = await http.get(f"/jobs/{job_id}?wait=30", headers=AUTH)
        job = done.json()
        assert job["status"] == "completed", job
        [image] = job["result"]["images"]
        assert image["key"].startswith(f"outputs/_/{job_id}/0-")
        assert parse_qs(urlsplit(image["url"]).query)["X-Amz-Expires"] == ["600"]
        async with httpx.AsyncClient(timeout=10) as plain:  # a customer's GET: no credentials
            downloaded = await plain.get(image["url"])
        assert downloaded.status_code == 200
        assert downloaded.content.startswith(b"\x89PNG")
        assert hashlib.sha256(downloaded.content).hexdigest() == image["sha256"]
        assert len(downloaded.content) == image["bytes"]
        assert "base64" not in image
        assert SECRET_KEY not in done.text
