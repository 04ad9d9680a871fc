"""Documents built from detected hardware: the capability fragment a worker registers and
the full report `emp-worker detect` and the dashboard show."""

from __future__ import annotations

from typing import Any

from worker.hardware.info import GpuInfo, HardwareInfo


def to_capabilities_hardware(info: HardwareInfo) -> dict[str, Any]:
    """The ``capabilities.hardware`` document workers register
    (docs/ARCHITECTURE.md#requirements-and-capabilities)."""
    gpus: list[dict[str, Any]] = []
    for g in info.gpus:
        entry: dict[str, Any] = {
            "index": g.index,
            "uuid": g.uuid,
            "name": g.name,
            "memory_gb": g.memory_gb,
            "memory_free_gb": g.memory_free_gb,
        }
        if g.compute_capability is not None:
            entry["compute_capability"] = g.compute_capability
        gpus.append(entry)
    return {"gpus": gpus, "cpu_cores": info.cpu_cores, "ram_gb": info.ram_gb}


def _gpu_report(g: GpuInfo) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.uuid,
        "name": g.name,
        "memory_total_bytes": g.memory_total_bytes,
        "memory_free_bytes": g.memory_free_bytes,
        "memory_used_bytes": g.memory_used_bytes,
        "memory_gb": g.memory_gb,
        "memory_free_gb": g.memory_free_gb,
        "memory_used_gb": g.memory_used_gb,
        "compute_capability": g.compute_capability,
        "utilization_gpu": g.utilization_gpu,
        "utilization_memory": g.utilization_memory,
        "temperature_c": g.temperature_c,
        "power_w": round(g.power_w, 1) if g.power_w is not None else None,
        "pci_bus_id": g.pci_bus_id,
        "mig_enabled": g.mig_enabled,
    }


def to_report(info: HardwareInfo) -> dict[str, Any]:
    """The full JSON of ``emp-worker detect`` and the dashboard (JSON-serialisable)."""
    return {
        "gpu_count": info.gpu_count,
        "gpus": [_gpu_report(g) for g in info.gpus],
        "driver_version": info.driver_version,
        "cuda_version": info.cuda_version,
        "gpu_error": info.gpu_error,
        "cpu_cores": info.cpu_cores,
        "ram_bytes": info.ram_bytes,
        "ram_gb": info.ram_gb,
        "ram_available_bytes": info.ram_available_bytes,
        "ram_available_gb": info.ram_available_gb,
        "disk_path": info.disk_path,
        "disk_free_bytes": info.disk_free_bytes,
        "disk_free_gb": info.disk_free_gb,
    }
