"""Builders for the documents tests need, written as the JSON a client would send."""

from __future__ import annotations

from typing import Any

from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.matching import Demand
from shared.requirements import Requirements
from shared.validation import convert


def job(service: str = "sim", **fields: Any) -> JobRequest:
    return convert({"service_type": service, **fields}, JobRequest)


def caps(services: tuple[str, ...] = ("sim",), **fields: Any) -> Capabilities:
    return convert({"services": list(services), **fields}, Capabilities)


def gpu(memory_gb: float, name: str = "NVIDIA RTX 4090", cc: str | None = "8.9") -> dict[str, Any]:
    out: dict[str, Any] = {"memory_gb": memory_gb, "name": name}
    if cc is not None:
        out["compute_capability"] = cc
    return out


def demand(service: str = "sim", customer: str = "", **requirements: Any) -> Demand:
    return Demand(service, customer, convert(requirements, Requirements))
