"""The model files a job's payload names, found without running it.

A job that gives no `requirements.models` still names models in its payload: the loader
nodes of a ComfyUI workflow, the checkpoint of an A1111 request, the `models` list of a
simulation job. The broker records them as the job's preferred models (a preference for a
worker that has them warm, never a requirement), and workers use the same functions to know
what the jobs they ran loaded. Every function here is pure, bounded and deterministic: the
same payload gives the same list, whatever the order of its nodes, so jobs that load the same
models share a requirement class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

# At most this many models per payload: a preference needs the big ones, not every LoRA.
MAX_MODELS: Final = 16
# Longer names are ignored, not cut: a cut name would name a model nobody has.
MAX_NAME_CHARS: Final = 256

# ComfyUI's loader nodes (nodes.py and comfy_extras of ComfyUI 0.8) and the inputs that name
# their files, biggest models first: when a workflow names more than MAX_MODELS, the
# checkpoints and diffusion models are the ones kept.
COMFYUI_LOADERS: Final[Mapping[str, tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CheckpointLoader": ("ckpt_name",),
    "unCLIPCheckpointLoader": ("ckpt_name",),
    "ImageOnlyCheckpointLoader": ("ckpt_name",),
    "UNETLoader": ("unet_name",),
    "CLIPLoader": ("clip_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
    "TripleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3"),
    "QuadrupleCLIPLoader": ("clip_name1", "clip_name2", "clip_name3", "clip_name4"),
    "VAELoader": ("vae_name",),
    "ControlNetLoader": ("control_net_name",),
    "DiffControlNetLoader": ("control_net_name",),
    "CLIPVisionLoader": ("clip_name",),
    "StyleModelLoader": ("style_model_name",),
    "UpscaleModelLoader": ("model_name",),
    "LoraLoader": ("lora_name",),
    "LoraLoaderModelOnly": ("lora_name",),
    "HypernetworkLoader": ("hypernetwork_name",),
    "GLIGENLoader": ("gligen_name",),
}
_LOADER_RANK: Final = {name: rank for rank, name in enumerate(COMFYUI_LOADERS)}

COMFYUI_SERVICE: Final = "comfyui"
A1111_SERVICE: Final = "a1111"


def model_name(value: Any) -> str | None:
    """`value` as a model name, or None when it cannot be one (not a string, empty, too
    long, or holding control characters)."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        return None
    return name


def bounded(names: Iterable[Any], limit: int = MAX_MODELS) -> list[str]:
    """Valid names, each once, in their first order, at most `limit`."""
    out: dict[str, None] = {}
    for value in names:
        name = model_name(value)
        if name is not None:
            out[name] = None
            if len(out) >= limit:
                break
    return list(out)


def comfyui_graph(payload: Any) -> Mapping[str, Any] | None:
    """The API-format graph of a ComfyUI payload, as the ComfyUI connector finds it:
    `workflow`, the original connector's `prompt`, or the payload itself."""
    if not isinstance(payload, Mapping):
        return None
    graph = payload.get("workflow", payload.get("prompt"))
    if graph is None:
        graph = payload
    return graph if isinstance(graph, Mapping) else None


def comfyui_models(payload: Any) -> list[str]:
    """The files the loader nodes of a ComfyUI workflow load: checkpoints first, then by
    loader kind, then by name (not by node id, which says nothing about the model)."""
    graph = comfyui_graph(payload)
    if graph is None:
        return []
    found: set[tuple[int, str]] = set()
    for node in graph.values():
        if not isinstance(node, Mapping):
            continue
        kind = node.get("class_type")
        inputs = node.get("inputs")
        if not isinstance(kind, str) or kind not in COMFYUI_LOADERS:
            continue
        if not isinstance(inputs, Mapping):
            continue
        for field in COMFYUI_LOADERS[kind]:
            # A linked input ([node, slot]) names no file here: it is not a string.
            name = model_name(inputs.get(field))
            if name is not None:
                found.add((_LOADER_RANK[kind], name))
    return bounded(name for _, name in sorted(found))


def a1111_models(payload: Any) -> list[str]:
    """The checkpoint an A1111 job asks for: its top-level `model`, else the request body's
    `override_settings.sd_model_checkpoint` (the body is `payload`, or the payload itself)."""
    if not isinstance(payload, Mapping):
        return []
    model = model_name(payload.get("model"))
    if model is not None:
        return [model]
    body = payload.get("payload", payload)
    overrides = body.get("override_settings") if isinstance(body, Mapping) else None
    if isinstance(overrides, Mapping):
        return bounded([overrides.get("sd_model_checkpoint")])
    return []


def listed_models(payload: Any) -> list[str]:
    """A payload's explicit `models` list (the simulation connector's, and the way any
    other service's payload can name its models)."""
    models = payload.get("models") if isinstance(payload, Mapping) else None
    return bounded(models) if isinstance(models, list) else []


def payload_models(service_type: str, payload: Any) -> list[str]:
    """The models a job's payload names, read the way its service's connector reads it:
    ComfyUI workflows for `comfyui`, A1111 requests for `a1111`, an explicit `models` list
    for every other service (the simulation connector's payload)."""
    service = service_type.lower()
    if service == COMFYUI_SERVICE:
        return comfyui_models(payload)
    if service == A1111_SERVICE:
        return a1111_models(payload)
    return listed_models(payload)
