"""ComfyUI results through the SDK: a real worker drives the fake ComfyUI, and `images()`
hands back the PNG's bytes when the worker sent it inline, or its URL when it did not."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from emp import Job
from shared.settings import BrokerSettings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.hub_support import hub_settings, running_hub
from tests.sdk_support import client
from tests.worker_support import running_worker, worker_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def workflow() -> dict[str, Any]:
    graph: dict[str, Any] = copy.deepcopy(
        load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]
    )
    graph["2"]["inputs"]["steps"] = 3
    return graph


async def run_comfy_job(redis_url: str, broker: BrokerSettings, **worker_env: str) -> Job:
    with FakeComfyUI() as comfy:
        settings = worker_settings(
            redis_url, "comfy-1", SERVICES="comfyui", COMFYUI_URL=comfy.url, **worker_env
        )
        async with (
            running_hub(hub_settings(redis_url, broker)) as hub,
            running_worker(settings),
            client(hub.url) as emp,
        ):
            return await emp.run("comfyui", {"workflow": workflow()}, timeout=60)


async def test_inline_images_come_with_their_bytes(
    redis_url: str, broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    job = await run_comfy_job(redis_url, broker_settings)
    (image,) = job.images()
    assert image.inline
    assert image.data is not None
    assert image.data.startswith(PNG_MAGIC)
    assert image.content_type == "image/png"
    assert image.size == len(image.data)
    assert image.node is not None
    saved = image.save(tmp_path)
    assert saved.parent == tmp_path
    assert saved.read_bytes() == image.data


async def test_images_over_the_inline_budget_come_as_urls(
    redis_url: str, broker_settings: BrokerSettings, tmp_path: Path
) -> None:
    job = await run_comfy_job(redis_url, broker_settings, COMFYUI_MAX_INLINE_BYTES="0")
    (image,) = job.images()
    assert not image.inline
    assert image.data is None
    assert image.url is not None
    assert "/view?" in image.url
    assert image.filename in image.url
    with pytest.raises(ValueError, match="not sent inline"):
        image.save(tmp_path)
