"""Live readings for the worker dashboard: CPU, RAM and per-GPU utilization and memory.

Unlike detection, which runs once at start-up, this runs every few seconds, so it never logs
above DEBUG and tolerates every NVML failure per call.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from worker.hardware.detection import load_psutil
from worker.hardware.info import HardwareInfo, bytes_to_gb, opt_gb
from worker.hardware.nvml import (
    error_text,
    guard,
    nvml_error_types,
    nvml_start,
    nvml_stop,
    nvml_text,
)

# The name these lines have always carried (operators filter on it), not the module's.
logger = logging.getLogger("worker.utilization")


def _sample_gpu(mod: Any, index: int, errors: tuple[type[BaseException], ...]) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index}
    try:
        handle = mod.nvmlDeviceGetHandleByIndex(index)
    except errors as exc:
        entry["error"] = error_text(exc)
        return entry
    entry["uuid"] = guard(errors, lambda: nvml_text(mod.nvmlDeviceGetUUID(handle)))
    util = guard(errors, lambda: mod.nvmlDeviceGetUtilizationRates(handle))
    entry["utilization_gpu"] = int(util.gpu) if util is not None else None
    entry["utilization_memory"] = int(util.memory) if util is not None else None
    mem = guard(errors, lambda: mod.nvmlDeviceGetMemoryInfo(handle))
    for key, attr in (("total", "total"), ("used", "used"), ("free", "free")):
        value = int(getattr(mem, attr)) if mem is not None else None
        entry[f"memory_{key}_bytes"] = value
        entry[f"memory_{key}_gb"] = opt_gb(value)
    sensor = getattr(mod, "NVML_TEMPERATURE_GPU", 0)
    entry["temperature_c"] = guard(
        errors, lambda: int(mod.nvmlDeviceGetTemperature(handle, sensor))
    )
    power_mw = guard(errors, lambda: int(mod.nvmlDeviceGetPowerUsage(handle)))
    entry["power_w"] = round(power_mw / 1000.0, 1) if power_mw is not None else None
    return entry


def sample_utilization(nvml: Any | None = None, psutil_mod: Any | None = None) -> dict[str, Any]:
    """A cheap live reading for the dashboard: CPU %, RAM and per-GPU utilization / memory.

    ``cpu_percent`` is measured since the previous call (psutil's ``interval=None``), so the very
    first sample of a process reads 0.0. No GPU gives ``"gpus": []`` and ``gpu_error``; nothing is
    logged above DEBUG, so a periodic refresh stays quiet.
    """
    result: dict[str, Any] = {
        "cpu_percent": None,
        "ram_total_bytes": None,
        "ram_used_bytes": None,
        "ram_total_gb": None,
        "ram_used_gb": None,
        "ram_percent": None,
        "gpus": [],
        "gpu_error": None,
    }
    ps = load_psutil(psutil_mod)
    if ps is not None:
        try:
            result["cpu_percent"] = float(ps.cpu_percent(interval=None))
        except Exception as exc:  # pragma: no cover - defensive
            logger.debug("cpu_percent failed: %s", exc)
        try:
            vm = ps.virtual_memory()
            total, used = int(vm.total), int(vm.total) - int(vm.available)
            result.update(
                ram_total_bytes=total,
                ram_used_bytes=used,
                ram_total_gb=bytes_to_gb(total),
                ram_used_gb=bytes_to_gb(used),
                ram_percent=round(100.0 * used / total, 1) if total else None,
            )
        except Exception as exc:  # pragma: no cover - defensive
            logger.debug("virtual_memory failed: %s", exc)

    mod, error = nvml_start(nvml, logging.DEBUG)
    if mod is None:
        result["gpu_error"] = error
        return result
    errors = nvml_error_types(mod)
    try:
        count = int(mod.nvmlDeviceGetCount())
        result["gpus"] = [_sample_gpu(mod, index, errors) for index in range(count)]
    except Exception as exc:
        result["gpu_error"] = error_text(exc)
    finally:
        nvml_stop(mod)
    return result


def with_free_memory(info: HardwareInfo, sample: dict[str, Any]) -> HardwareInfo:
    """`info` with each GPU's free memory taken from a live `sample_utilization()` reading
    (matched by UUID), capped at the GPU's (possibly overridden) total. GPUs the sample does
    not cover, such as ones synthesised by GPU_COUNT, keep what they had."""
    free_by_uuid = {
        g.get("uuid"): g.get("memory_free_bytes")
        for g in sample.get("gpus", [])
        if isinstance(g.get("memory_free_bytes"), int)
    }
    gpus = tuple(
        dataclasses.replace(
            g, memory_free_bytes=min(int(free_by_uuid[g.uuid]), g.memory_total_bytes)
        )
        if g.uuid in free_by_uuid
        else g
        for g in info.gpus
    )
    return dataclasses.replace(info, gpus=gpus)
