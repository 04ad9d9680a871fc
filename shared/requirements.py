"""What a job asks of the worker that runs it
(docs/ARCHITECTURE.md#requirements-and-capabilities).

Every requirement is optional and an absent one matches anything. Unknown fields are an
error: a typo such as `gpu_memory` must not silently turn into "no requirement".
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
import orjson

from shared.validation import CustomerId, Name, NameList, ServiceType, whole

Isolation = Literal["strict", "loose", "none"]
ComputeCapability = Annotated[
    str,
    msgspec.Meta(
        pattern=whole(r"[0-9]{1,2}\.[0-9]{1,2}"), description='CUDA compute capability, "8.0"'
    ),
]


class _RequirementSection(
    msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True
):
    """Base of every part of a requirement document: an unknown field is refused, because
    a job's typo must not silently mean "no requirement"."""


class GpuRequirement(_RequirementSection, frozen=True):
    """At least `count` GPUs, each satisfying every other field (a job never spans GPUs)."""

    memory_gb: Annotated[float, msgspec.Meta(ge=0, le=100_000)] | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    model: Name | None = None
    compute_capability: ComputeCapability | None = None


class HardwareRequirement(_RequirementSection, frozen=True):
    gpu: GpuRequirement | None = None
    cpu_cores: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    ram_gb: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class PerformanceRequirement(_RequirementSection, frozen=True):
    quality: Name | None = None


class GeographicRequirement(_RequirementSection, frozen=True):
    region: Name | None = None
    compliance: NameList = []


class CostRequirement(_RequirementSection, frozen=True):
    max_per_hour: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None


class Requirements(_RequirementSection, frozen=True):
    hardware: HardwareRequirement | None = None
    models: NameList = []
    customer_isolation: Isolation = "none"
    performance: PerformanceRequirement | None = None
    geographic: GeographicRequirement | None = None
    cost: CostRequirement | None = None


def requirement_class(
    service_type: ServiceType,
    customer_id: CustomerId | None,
    req: Requirements,
    preferred_models: Sequence[str] = (),
) -> str:
    """Identify the matching class of a job.

    Jobs with the same service, customer and requirement document match exactly the same
    workers, so the broker queues them together and checks the class once per claim. Jobs
    that prefer different models (found in their payloads, shared/model_refs.py) are kept
    apart too, so a claim can prefer a class whose models are warm on the worker. A job that
    gives `models` prefers exactly those, which its document already holds: its id, like
    that of a job that prefers nothing, is what it always was.
    """
    doc: dict[str, object] = {
        "s": service_type,
        "c": customer_id or "",
        "r": msgspec.to_builtins(req),
    }
    if not req.models and preferred_models:
        doc["p"] = list(preferred_models)
    return hashlib.sha1(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
