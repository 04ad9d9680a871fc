"""Warm models, worker side: what each connector reports loaded, and how the worker carries
it to the broker (every claim, the heartbeat) and on to the hub's fleet view."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

from shared.broker import Broker
from shared.capabilities import Capabilities
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.factories import job
from tests.fakes.a1111 import MODELS, FakeA1111
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_validation import load_recording
from tests.helpers import wait_until
from tests.hub_support import OPERATOR, hub_client, hub_settings
from tests.worker_support import finished, make_worker, running_worker, sim, worker_settings
from worker.connectors.a1111 import A1111Connector
from worker.connectors.base import JobContext
from worker.connectors.comfyui import ComfyUIConnector
from worker.runtime import Worker

RECORDED: dict[str, Any] = load_recording("run_success")["steps"][2]["request"]["json"]["prompt"]


async def no_progress(percent: float, message: str) -> None:
    return None


# -- the worker carries them --------------------------------------------------------------


def spy_on_claims(worker: Worker) -> list[list[str]]:
    """The warm models of every claim the worker sends, plain or with a completion."""
    sent: list[list[str]] = []
    broker: Any = worker.broker
    claim, complete_and_claim = broker.claim, broker.complete_and_claim

    def record(caps: Capabilities | bytes) -> None:
        doc = (
            caps if isinstance(caps, Capabilities) else msgspec.json.decode(caps, type=Capabilities)
        )
        sent.append(list(doc.warm_models))

    async def spied_claim(worker_id: str, caps: Any, **kw: Any) -> Any:
        record(caps)
        return await claim(worker_id, caps, **kw)

    async def spied_complete_and_claim(*args: Any) -> Any:
        record(args[-1])
        return await complete_and_claim(*args)

    broker.claim, broker.complete_and_claim = spied_claim, spied_complete_and_claim
    return sent


async def test_the_models_a_job_loaded_go_with_the_very_next_claim(
    broker: Broker, redis_url: str
) -> None:
    await broker.submit(job("simulation", payload=sim(models=["llama-8b"])))
    await broker.submit(job("simulation", payload=sim(models=["mistral-7b"])))
    worker = make_worker(worker_settings(redis_url), burst=True)
    sent = spy_on_claims(worker)

    await worker.run()

    # First claim: nothing loaded yet. Each completion claims the next job knowing what the
    # finished one loaded, the latest first.
    assert sent[:3] == [[], ["llama-8b"], ["mistral-7b", "llama-8b"]]
    assert worker.capabilities.warm_models == ["mistral-7b", "llama-8b"]


async def test_heartbeats_bring_them_to_the_hubs_fleet_view(
    broker: Broker, redis_url: str, broker_settings: BrokerSettings
) -> None:
    async with (
        running_worker(worker_settings(redis_url, worker_id="sim-1")),
        hub_client(hub_settings(redis_url, broker_settings)) as api,
    ):
        job_id = (await broker.submit(job("simulation", payload=sim(models=["sdxl"])))).job_id
        assert (await finished(broker, job_id)).status == JobStatus.COMPLETED

        async def shown() -> dict[str, Any] | None:
            answer: dict[str, Any] = (await api.get("/workers/sim-1", headers=OPERATOR)).json()
            return answer if answer.get("warm_models") == ["sdxl"] else None

        worker = await wait_until(shown, timeout=10, message="the hub shows sim-1's warm models")
        assert worker["capabilities"]["warm_models"] == ["sdxl"]
        listed = (await api.get("/workers", headers=OPERATOR)).json()["workers"]
        assert [w["warm_models"] for w in listed] == [["sdxl"]]


# -- ComfyUI: the loader nodes of the workflows it ran ------------------------------------


def loader(name: str, field: str, output: str) -> dict[str, Any]:
    """An /object_info entry for a stock loader node, in ComfyUI's shape."""
    return {
        "input": {"required": {field: [[], {}]}},
        "input_order": {"required": [field]},
        "output": [output],
        "output_is_list": [False],
        "output_name": [output],
        "name": name,
        "display_name": name,
        "description": "",
        "python_module": "nodes",
        "category": "loaders",
        "output_node": False,
    }


def with_loaders(server: FakeComfyUI) -> FakeComfyUI:
    """The fake knows the recorded node classes only: teach it two stock loaders."""
    server.object_info["CheckpointLoaderSimple"] = loader(
        "CheckpointLoaderSimple", "ckpt_name", "MODEL"
    )
    server.object_info["LoraLoader"] = loader("LoraLoader", "lora_name", "MODEL")
    return server


@pytest.fixture
def comfy_fake() -> Iterator[FakeComfyUI]:
    with with_loaders(FakeComfyUI(step_delay=0.002)) as server:
        yield server


@pytest.fixture
async def comfy(comfy_fake: FakeComfyUI) -> AsyncIterator[ComfyUIConnector]:
    connector = ComfyUIConnector(
        {"COMFYUI_URL": comfy_fake.url, "COMFYUI_POLL_SECONDS": "0.02", "COMFYUI_WARM_MODELS": "2"}
    )
    yield connector
    await connector.close()


def workflow_loading(color: int, **loaders: str) -> dict[str, Any]:
    """The recorded workflow plus loader nodes (`ckpt`, `lora`) naming the given files."""
    graph = copy.deepcopy(RECORDED)
    graph["1"]["inputs"]["color"] = color  # no cache hits across runs
    kinds = {"ckpt": ("CheckpointLoaderSimple", "ckpt_name"), "lora": ("LoraLoader", "lora_name")}
    for key, name in loaders.items():
        class_type, field = kinds[key]
        graph[f"l-{key}"] = {"class_type": class_type, "inputs": {field: name}}
    return graph


async def run_comfy(connector: ComfyUIConnector, graph: dict[str, Any], n: int) -> None:
    context = JobContext(job_id=f"job-{n}", service_type="comfyui", payload={"workflow": graph})
    await connector.run(context, no_progress, asyncio.Event())


async def test_comfyui_reports_the_loaders_of_its_latest_workflows(
    comfy: ComfyUIConnector,
) -> None:
    assert comfy.warm_models() == []
    await run_comfy(comfy, workflow_loading(1, ckpt="sdxl.safetensors"), 1)
    assert comfy.warm_models() == ["sdxl.safetensors"]
    await run_comfy(comfy, workflow_loading(2, ckpt="flux.safetensors", lora="ink.st"), 2)
    # COMFYUI_WARM_MODELS=2: the oldest is forgotten, the new checkpoint comes first.
    assert comfy.warm_models() == ["flux.safetensors", "ink.st"]
    await run_comfy(comfy, workflow_loading(3), 3)  # a model-free workflow loads nothing
    assert comfy.warm_models() == ["flux.safetensors", "ink.st"]


async def test_a_comfyui_that_stops_answering_holds_nothing() -> None:
    with with_loaders(FakeComfyUI(step_delay=0.002)) as server:
        comfy = ComfyUIConnector({"COMFYUI_URL": server.url})
        await run_comfy(comfy, workflow_loading(4, ckpt="sdxl.safetensors"), 1)
        assert (await comfy.health()).ok
        assert comfy.warm_models() == ["sdxl.safetensors"]
    # A ComfyUI that comes back has restarted: it holds nothing.
    assert not (await comfy.health()).ok
    assert comfy.warm_models() == []
    await comfy.close()


# -- A1111: the checkpoint it has loaded ---------------------------------------------------


@pytest.fixture
async def a1111() -> AsyncIterator[tuple[A1111Connector, FakeA1111]]:
    with FakeA1111(step_delay=0.001) as fake:
        connector = A1111Connector({"A1111_URL": fake.url, "A1111_POLL_SECONDS": "0.01"})
        await connector.start()
        yield connector, fake
        await connector.close()


async def test_a1111_reports_the_loaded_checkpoint_in_every_spelling(
    a1111: tuple[A1111Connector, FakeA1111],
) -> None:
    connector, _ = a1111
    assert connector.warm_models() == []  # not asked yet
    assert (await connector.health()).ok
    assert connector.warm_models() == [
        "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "v1-5-pruned-emaonly",
        "v1-5-pruned-emaonly.safetensors",
    ]


async def test_a1111_reads_what_is_loaded_after_each_generation(
    a1111: tuple[A1111Connector, FakeA1111],
) -> None:
    connector, fake = a1111
    await connector.health()
    # Someone switches the WebUI's checkpoint; the job overrides it only for itself (A1111
    # restores the setting afterwards by default): what is loaded is what the options say.
    fake.checkpoint = MODELS[1]["title"]
    context = JobContext(
        job_id="job-1",
        service_type="a1111",
        payload={"model": "v1-5-pruned-emaonly", "prompt": "a fox", "steps": 2},
    )
    await connector.run(context, no_progress, asyncio.Event())
    assert connector.warm_models()[:2] == [MODELS[1]["title"], "sd_xl_base_1.0"]
