"""Which models a payload names (shared/model_refs.py), and the worker's record of what its
service holds loaded (worker/connectors/warm.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.job import JobRequest
from shared.model_refs import (
    MAX_MODELS,
    MAX_NAME_CHARS,
    a1111_models,
    comfyui_models,
    listed_models,
    payload_models,
)
from shared.requirements import Requirements, requirement_class
from worker.capabilities import merge_warm_models
from worker.connectors.warm import WarmModels

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
RECORDED_PROMPTS = sorted(FIXTURES.glob("run_*.json"))


def recorded_prompt(path: Path) -> Any:
    steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
    return next(
        s["request"]["json"]["prompt"]
        for s in steps
        if s.get("request", {}).get("path") == "/prompt"
    )


# A Flux workflow in API format: diffusion model, two text encoders, VAE, a LoRA, an upscaler.
FLUX: dict[str, Any] = {
    "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors"}},
    "11": {
        "class_type": "DualCLIPLoader",
        "inputs": {"clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_l.safetensors"},
    },
    "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "20": {
        "class_type": "LoraLoaderModelOnly",
        "inputs": {"lora_name": "ink.safetensors", "model": ["12", 0]},
    },
    "30": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x-ultra.pth"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["11", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
}


@pytest.mark.parametrize("path", RECORDED_PROMPTS, ids=lambda p: p.stem)
def test_the_recorded_model_free_workflows_name_no_model(path: Path) -> None:
    # Recorded on a real ComfyUI with no weights: EmptyImage, SlowImage, SaveImage only.
    assert comfyui_models({"workflow": recorded_prompt(path)}) == []


def test_loader_nodes_give_their_files_biggest_kinds_first() -> None:
    assert comfyui_models({"workflow": FLUX}) == [
        "flux1-dev.safetensors",
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
        "ae.safetensors",
        "4x-ultra.pth",
        "ink.safetensors",
    ]


def test_the_graph_is_found_where_the_comfyui_connector_finds_it() -> None:
    expected = comfyui_models({"workflow": FLUX})
    assert comfyui_models({"prompt": FLUX}) == expected  # the original connector's key
    assert comfyui_models(FLUX) == expected  # the bare graph


def test_node_order_does_not_change_the_list() -> None:
    reordered = dict(reversed(list(FLUX.items())))
    assert comfyui_models(reordered) == comfyui_models(FLUX)


def test_links_non_strings_and_odd_names_are_ignored() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["7", 0]}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": 42}},
        "3": {"class_type": "LoraLoader", "inputs": {"lora_name": "x" * (MAX_NAME_CHARS + 1)}},
        "4": {"class_type": "LoraLoader", "inputs": {"lora_name": "bad\nname"}},
        "5": {"class_type": "LoraLoader", "inputs": {"lora_name": "  "}},
        "6": {"class_type": "CheckpointLoaderSimple", "inputs": "not an object"},
        "7": "not a node",
        "8": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": " sd15.ckpt "}},
    }
    assert comfyui_models(graph) == ["sd15.ckpt"]


def test_a_workflow_naming_many_models_keeps_the_bound_and_the_checkpoints() -> None:
    graph: dict[str, Any] = {
        str(i): {"class_type": "LoraLoader", "inputs": {"lora_name": f"lora-{i:03}"}}
        for i in range(100)
    }
    graph["ckpt"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "zzz.ckpt"}}
    found = comfyui_models(graph)
    assert len(found) == MAX_MODELS
    assert found[0] == "zzz.ckpt"


@pytest.mark.parametrize("payload", [None, [], "text", {"workflow": "x"}, {"nodes": [1]}])
def test_payloads_that_are_no_workflow_name_nothing(payload: Any) -> None:
    assert comfyui_models(payload) == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"model": "sd_xl_base_1.0", "prompt": "a fox"}, ["sd_xl_base_1.0"]),
        ({"override_settings": {"sd_model_checkpoint": "v1-5.safetensors"}}, ["v1-5.safetensors"]),
        (
            {"payload": {"override_settings": {"sd_model_checkpoint": "v1-5 [6ce0161689]"}}},
            ["v1-5 [6ce0161689]"],
        ),
        ({"model": "a", "override_settings": {"sd_model_checkpoint": "b"}}, ["a"]),
        ({"prompt": "a fox"}, []),
        ({"override_settings": {"sd_model_checkpoint": 3}}, []),
        ({"payload": "not an object"}, []),
    ],
)
def test_an_a1111_job_names_its_checkpoint(payload: Any, expected: list[str]) -> None:
    assert a1111_models(payload) == expected


def test_an_explicit_models_list_is_kept_in_order_once_and_bounded() -> None:
    assert listed_models({"models": ["b", "a", "b", 7, ""]}) == ["b", "a"]
    assert listed_models({"models": "a"}) == []
    assert len(listed_models({"models": [f"m{i}" for i in range(99)]})) == MAX_MODELS


def test_each_service_is_read_the_way_its_connector_reads_it() -> None:
    comfy = {"workflow": FLUX, "models": ["ignored"]}
    assert payload_models("comfyui", comfy) == comfyui_models(comfy)
    assert payload_models("a1111", {"model": "m", "models": ["ignored"]}) == ["m"]
    assert payload_models("simulation", {"models": ["llama-8b"]}) == ["llama-8b"]
    assert payload_models("render", {"models": ["llama-8b"]}) == ["llama-8b"]
    assert payload_models("render", {"workflow": FLUX}) == []


def test_a_job_prefers_its_required_models_else_its_payloads() -> None:
    required = JobRequest(
        service_type="comfyui", payload=FLUX, requirements=Requirements(models=["sdxl", "sdxl"])
    )
    assert required.preferred_models() == ("sdxl",)
    extracted = JobRequest(service_type="ComfyUI", payload={"workflow": FLUX})
    assert extracted.preferred_models()[0] == "flux1-dev.safetensors"


def test_preferred_models_separate_classes_without_moving_the_others() -> None:
    none = Requirements()
    sdxl = Requirements(models=["sdxl"])
    assert requirement_class("c", None, none, ("a",)) != requirement_class("c", None, none, ("b",))
    assert requirement_class("c", None, none, ()) == requirement_class("c", None, none)
    # A required model is already in the document: the id it always had.
    assert requirement_class("c", None, sdxl, ("sdxl",)) == requirement_class("c", None, sdxl)


def test_warm_models_keep_the_latest_first_within_the_bound() -> None:
    warm = WarmModels(3)
    warm.used(["sdxl", "vae"])
    assert warm.names() == ["sdxl", "vae"]
    warm.used(["flux"])
    warm.used(["sdxl"])  # used again: the most recent
    assert warm.names() == ["sdxl", "flux", "vae"]
    warm.used(["lora-a", "bad\nname", ""])  # the oldest goes; what is no name is skipped
    assert warm.names() == ["lora-a", "sdxl", "flux"]
    warm.clear()
    assert warm.names() == []


def test_a_bound_of_zero_keeps_nothing() -> None:
    warm = WarmModels(0)
    warm.used(["sdxl"])
    assert warm.names() == []


def test_the_workers_warm_models_merge_its_connectors_once_each() -> None:
    assert merge_warm_models([["sdxl", "vae"], [], ["vae", "llama"]]) == ["sdxl", "vae", "llama"]
