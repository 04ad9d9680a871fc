"""The capability document a worker registers, built from settings, hardware and connectors.

Only services whose connector is healthy are offered: a worker whose ComfyUI is down must
not claim ComfyUI jobs it would fail, while it keeps serving its other services.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.capabilities import MAX_MODELS, Capabilities
from shared.validation import convert
from worker.hardware.info import HardwareInfo
from worker.hardware.report import to_capabilities_hardware
from worker.settings import WorkerSettings


def build_capabilities(
    settings: WorkerSettings,
    hardware: HardwareInfo,
    services: Iterable[str],
    connector_caps: Iterable[Mapping[str, Any]] = (),
    warm_models: Iterable[str] = (),
) -> Capabilities:
    """`services`: the service types this worker can serve right now (healthy connectors);
    `warm_models`: the models its services hold loaded (merge_warm_models)."""
    models = list(dict.fromkeys([*settings.models, *_connector_models(connector_caps)]))
    doc = {
        "services": list(services),
        "hardware": to_capabilities_hardware(hardware),
        "models": models,
        "warm_models": list(warm_models),
        "customer_access": {
            "isolation": settings.customer_isolation,
            "allowed_customers": list(settings.allowed_customers),
            "denied_customers": list(settings.denied_customers),
        },
        "performance": {"quality_levels": list(settings.quality_levels)},
        "geographic": {"region": settings.region, "compliance": list(settings.compliance)},
        "cost": {"per_hour": settings.cost_per_hour},
    }
    return convert(doc, Capabilities, root="capabilities")


def _connector_models(connector_caps: Iterable[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for caps in connector_caps:
        models = caps.get("models", [])
        if isinstance(models, list):
            out.extend(str(m) for m in models)
    return out


def merge_warm_models(per_connector: Iterable[Sequence[str]]) -> list[str]:
    """The warm models of every connector, each once, in connector order, within the
    capability document's bound."""
    merged: dict[str, None] = {}
    for names in per_connector:
        merged.update(dict.fromkeys(names))
    return list(merged)[:MAX_MODELS]
