"""What a worker offers, as registered in Redis and checked by the claim
(docs/ARCHITECTURE.md#requirements-and-capabilities).

Capabilities come from our own worker, so unknown fields are tolerated (newer workers may
report more than an older hub knows); every field has a default so the Lua matcher never
meets a missing value.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from shared.requirements import ComputeCapability, Isolation
from shared.validation import CustomerList, NameList, ServiceType, normalise_services

# Model names a worker may list, loadable or warm.
MAX_MODELS: Final = 4096


class _CapabilitySection(msgspec.Struct, frozen=True):
    """Base of every part of a capability document: unknown fields are tolerated, because a
    newer worker may report more than an older hub knows."""


class GpuCapability(_CapabilitySection, frozen=True):
    memory_gb: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    index: int = 0
    uuid: str = ""
    name: str = ""
    memory_free_gb: float | None = None
    compute_capability: ComputeCapability | None = None


class HardwareCapabilities(_CapabilitySection, frozen=True):
    gpus: list[GpuCapability] = []
    cpu_cores: Annotated[int, msgspec.Meta(ge=0)] = 0
    ram_gb: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class CustomerAccess(_CapabilitySection, frozen=True):
    """Worker-side isolation: strict serves only `allowed_customers` (dedicated hardware),
    loose serves anyone not in `denied_customers`, none serves anyone."""

    isolation: Isolation = "none"
    allowed_customers: CustomerList = []
    denied_customers: CustomerList = []


class PerformanceCapabilities(_CapabilitySection, frozen=True):
    quality_levels: NameList = []


class GeographicCapabilities(_CapabilitySection, frozen=True):
    region: str | None = None
    compliance: NameList = []


class CostCapabilities(_CapabilitySection, frozen=True):
    per_hour: Annotated[float, msgspec.Meta(ge=0)] = 0.0


class Capabilities(_CapabilitySection, frozen=True):
    services: Annotated[list[ServiceType], msgspec.Meta(max_length=64)] = []
    hardware: HardwareCapabilities = HardwareCapabilities()
    models: Annotated[list[str], msgspec.Meta(max_length=MAX_MODELS)] = []
    # The models loaded right now, most recently used first: a claim may prefer the jobs
    # that want them (README, Warm models); the matcher never reads them.
    warm_models: Annotated[list[str], msgspec.Meta(max_length=MAX_MODELS)] = []
    customer_access: CustomerAccess = CustomerAccess()
    performance: PerformanceCapabilities = PerformanceCapabilities()
    geographic: GeographicCapabilities = GeographicCapabilities()
    cost: CostCapabilities = CostCapabilities()

    def __post_init__(self) -> None:
        services = normalise_services(self.services)
        if services != self.services:  # case-insensitive (shared/validation.py)
            msgspec.structs.force_setattr(self, "services", services)
