"""A job's preferred models, end to end through the hub: found in a ComfyUI workflow at
submission, stored on the job and in its class document (`p`), kept apart per model, kept
through a release, and never a requirement: a worker without the model still claims the job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from shared.broker import Broker
from shared.settings import BrokerSettings
from shared.text import as_text
from tests.hub_support import CLIENT, capabilities, claim, hub_client, hub_settings, start_worker


@pytest.fixture
async def api(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        yield client


def sdxl_workflow(checkpoint: str, lora: str | None = None) -> dict[str, Any]:
    """An API-format text-to-image workflow, as ComfyUI's 'Save (API Format)' writes it."""
    graph: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }
    if lora is not None:
        graph["10"] = {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": lora, "model": ["4", 0], "clip": ["4", 1]},
        }
    return graph


async def submit(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/jobs", json=body, headers=CLIENT)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def class_of(broker: Broker, job_id: str) -> tuple[str, dict[str, Any] | None]:
    """The job's class id and its class document (None once the class emptied)."""
    class_id = as_text(await broker.redis.hget(broker.keys.job(job_id), "class_id") or "")
    raw = await broker.redis.hget(broker.keys.classes, class_id)
    return class_id, None if raw is None else orjson.loads(raw)


async def test_a_workflows_checkpoint_is_the_jobs_preference_on_job_and_class(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    body = {"service_type": "comfyui", "payload": {"workflow": sdxl_workflow("sdxl.safetensors")}}
    job = await submit(api, body)

    assert job["preferred_models"] == ["sdxl.safetensors"]
    shown = (await api.get(f"/jobs/{job['id']}", headers=CLIENT)).json()
    assert shown["preferred_models"] == ["sdxl.safetensors"]
    assert shown["requirements"] == {}  # a preference, not a requirement
    stored = await broker.redis.hget(broker.keys.job(job["id"]), "preferred_models")
    assert stored is not None
    assert orjson.loads(stored) == ["sdxl.safetensors"]
    _, document = await class_of(broker, job["id"])
    assert document == {"s": "comfyui", "c": "", "r": {}, "p": ["sdxl.safetensors"]}


async def test_jobs_that_load_different_models_are_in_different_classes(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    sdxl = await submit(api, {"service_type": "comfyui", "payload": sdxl_workflow("sdxl.st")})
    flux = await submit(api, {"service_type": "comfyui", "payload": sdxl_workflow("flux.st")})
    again = await submit(api, {"service_type": "comfyui", "payload": sdxl_workflow("sdxl.st")})
    with_lora = await submit(
        api, {"service_type": "comfyui", "payload": sdxl_workflow("sdxl.st", lora="ink.st")}
    )
    plain = await submit(api, {"service_type": "comfyui", "payload": {"workflow": {}}})

    ids = {name: (await class_of(broker, j["id"]))[0] for name, j in [
        ("sdxl", sdxl), ("flux", flux), ("again", again), ("lora", with_lora), ("plain", plain)
    ]}  # fmt: skip
    assert ids["sdxl"] == ids["again"]
    assert len({ids["sdxl"], ids["flux"], ids["lora"], ids["plain"]}) == 4
    assert with_lora["preferred_models"] == ["sdxl.st", "ink.st"]  # the checkpoint first
    assert plain["preferred_models"] == []
    assert (await class_of(broker, plain["id"]))[1] == {"s": "comfyui", "c": "", "r": {}}


async def test_a_worker_without_the_model_still_claims_the_job(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    job = await submit(
        api, {"service_type": "comfyui", "payload": {"workflow": sdxl_workflow("sdxl.st")}}
    )
    caps = await start_worker(
        broker, "no-sdxl", capabilities(models=["flux.st"], warm_models=["flux.st"])
    )

    got = await claim(broker, "no-sdxl", caps)

    assert got.job.id == job["id"]
    assert got.job.preferred_models == ["sdxl.st"]


async def test_requirement_models_are_the_preference_and_keep_their_class(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    body = {
        "service_type": "comfyui",
        "payload": sdxl_workflow("sdxl.st"),
        "requirements": {"models": ["flux.st"]},
    }
    job = await submit(api, body)

    assert job["preferred_models"] == ["flux.st"]
    _, document = await class_of(broker, job["id"])
    assert document is not None
    assert document["p"] == ["flux.st"]


async def test_a_batch_and_a_released_job_keep_the_preference(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    response = await api.post(
        "/jobs/batch",
        json={"jobs": [{"service_type": "simulation", "payload": {"models": ["llama-8b"]}}]},
        headers=CLIENT,
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["jobs"][0]["id"]
    class_id, document = await class_of(broker, job_id)
    assert document == {"s": "simulation", "c": "", "r": {}, "p": ["llama-8b"]}

    caps = await start_worker(broker, "sim-1", capabilities(services=["simulation"]))
    got = await claim(broker, "sim-1", caps)
    assert (await class_of(broker, job_id))[1] is None  # the class emptied with the claim
    assert await broker.release("sim-1", got.job.id, got.token) == "ok"

    # Back in its class, whose document is written again from the job hash.
    assert await class_of(broker, job_id) == (class_id, document)


async def test_the_original_rest_route_finds_them_too(
    api: httpx.AsyncClient, broker: Broker
) -> None:
    # The original emp-redis connector sent the workflow as `prompt`.
    response = await api.post(
        "/api/jobs",
        json={"job_type": "ComfyUI", "payload": {"prompt": sdxl_workflow("sdxl.st")}},
        headers=CLIENT,
    )
    assert response.status_code == 200, response.text
    job = await broker.get(response.json()["job_id"])
    assert job is not None
    assert job.preferred_models == ["sdxl.st"]
    _, document = await class_of(broker, job.id)
    assert document == {"s": "comfyui", "c": "", "r": {}, "p": ["sdxl.st"]}
