"""The requirement matcher: the specification the Lua claim script must agree with.

`mismatch()` returns None when the worker can run the job, else a short human reason naming
the first unmet requirement (the hub shows it as "why it waits").
`shared/lua/include/matching.lua` implements the same rules;
`tests/integration/test_match_agreement.py` checks that they agree on random documents.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.capabilities import Capabilities, GpuCapability
from shared.requirements import GpuRequirement, Isolation, Requirements

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class RunningCustomer:
    """The customer of a job the worker currently holds and the isolation that job asked
    for: all that customer isolation needs to know about it."""

    customer_id: str
    isolation: Isolation


@dataclass(frozen=True, slots=True)
class Demand:
    """The parts of a job that matching looks at."""

    service_type: str
    customer_id: str
    requirements: Requirements


def model_tokens(text: str) -> list[str]:
    """ASCII-lower-cased alphanumeric runs: "NVIDIA GeForce RTX-4090" -> nvidia geforce rtx 4090."""
    return _TOKEN_RE.findall(text.translate(_ASCII_LOWER))


def gpu_model_matches(wanted: str, name: str) -> bool:
    """Case-insensitive whole-word match: "H100" matches "NVIDIA H100 80GB HBM3", not "H1000"."""
    want = model_tokens(wanted)
    have = model_tokens(name)
    if not want:
        return True
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def _version(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)


def gpu_fits(gpu: GpuCapability, want: GpuRequirement) -> bool:
    if want.memory_gb is not None and gpu.memory_gb < want.memory_gb:
        return False
    if want.model is not None and not gpu_model_matches(want.model, gpu.name):
        return False
    if want.compute_capability is not None:
        have = _version(gpu.compute_capability)
        need = _version(want.compute_capability)
        if have is None or need is None or have < need:
            return False
    return True


def _describe_gpu(want: GpuRequirement) -> str:
    parts = [f"{want.count or 1} GPU(s)"]
    if want.memory_gb is not None:
        parts.append(f">= {want.memory_gb:g} GB")
    if want.model is not None:
        parts.append(f"model {want.model!r}")
    if want.compute_capability is not None:
        parts.append(f"compute capability >= {want.compute_capability}")
    return " ".join(parts)


def mismatch(
    demand: Demand, caps: Capabilities, running: Sequence[RunningCustomer] = ()
) -> str | None:
    """Why `caps` cannot run `demand` right now, or None when it can."""
    req = demand.requirements
    if demand.service_type not in caps.services:
        return f"service {demand.service_type!r} not offered"
    hw = req.hardware
    if hw is not None:
        if hw.gpu is not None:
            fitting = sum(1 for g in caps.hardware.gpus if gpu_fits(g, hw.gpu))
            if fitting < (hw.gpu.count or 1):
                return f"needs {_describe_gpu(hw.gpu)}"
        if hw.cpu_cores is not None and caps.hardware.cpu_cores < hw.cpu_cores:
            return f"needs >= {hw.cpu_cores} CPU cores"
        if hw.ram_gb is not None and caps.hardware.ram_gb < hw.ram_gb:
            return f"needs >= {hw.ram_gb:g} GB RAM"
    missing_models = [m for m in req.models if m not in caps.models]
    if missing_models:
        return f"needs model {missing_models[0]!r}"
    quality = req.performance.quality if req.performance is not None else None
    if quality is not None and quality not in caps.performance.quality_levels:
        return f"needs quality level {quality!r}"
    geo = req.geographic
    if geo is not None:
        if geo.region is not None and geo.region != caps.geographic.region:
            return f"needs region {geo.region!r}"
        missing_tags = [c for c in geo.compliance if c not in caps.geographic.compliance]
        if missing_tags:
            return f"needs compliance {missing_tags[0]!r}"
    ceiling = req.cost.max_per_hour if req.cost is not None else None
    if ceiling is not None and caps.cost.per_hour > ceiling:
        return f"needs cost <= {ceiling:g}/h"
    return _customer_mismatch(demand, caps, running)


def _customer_mismatch(
    demand: Demand, caps: Capabilities, running: Sequence[RunningCustomer]
) -> str | None:
    customer = demand.customer_id
    access = caps.customer_access
    if access.isolation == "strict" and customer not in access.allowed_customers:
        return f"customer {customer!r} not served (worker is dedicated)"
    if access.isolation == "loose" and customer in access.denied_customers:
        return f"customer {customer!r} not served (denied)"
    wanted = demand.requirements.customer_isolation
    if wanted == "strict" and access.isolation != "strict":
        return "needs dedicated (strict isolation) hardware"
    for job in running:
        if job.customer_id == customer:
            continue
        if job.isolation == "loose":
            return "worker is running another customer's loose-isolation job"
        if wanted == "loose":
            return "needs a worker running no other customer's job"
    return None


def matches(demand: Demand, caps: Capabilities, running: Sequence[RunningCustomer] = ()) -> bool:
    return mismatch(demand, caps, running) is None
