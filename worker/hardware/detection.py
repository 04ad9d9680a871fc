"""Detecting the machine once, at start-up: GPUs through NVML, host facts through ``psutil``.

Detection never raises because a machine has no GPU (see :mod:`worker.hardware.nvml`): the
worker then starts as a CPU-only worker. A device NVML cannot read is skipped and named in
``gpu_error`` rather than hiding the others.

``psutil`` ships without type information; it is loaded through :func:`importlib.import_module`
and handled as ``Any`` here. The ``nvml`` / ``psutil_mod`` parameters accept stand-in modules
for tests.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from typing import Any

from worker.hardware.info import GpuInfo, HardwareInfo, format_cuda_version
from worker.hardware.nvml import (
    error_text,
    guard,
    nvml_error_types,
    nvml_start,
    nvml_stop,
    nvml_text,
)

__all__ = ["detect", "detect_gpus", "detect_host", "load_psutil"]

# The name detection has always logged under (operators filter on it); hardware.nvml writes
# under it too, so one setting covers every line detection produces.
logger = logging.getLogger("worker.hardware")


def _cuda_version(mod: Any, errors: tuple[type[BaseException], ...]) -> str | None:
    raw = guard(errors, lambda: mod.nvmlSystemGetCudaDriverVersion_v2())
    if raw is None:
        raw = guard(errors, lambda: mod.nvmlSystemGetCudaDriverVersion())
    if raw is None:
        return None
    try:
        return format_cuda_version(int(raw))
    except (TypeError, ValueError):
        return None


def _read_device(mod: Any, index: int, errors: tuple[type[BaseException], ...]) -> GpuInfo | str:
    """One device, or a string saying why it could not be read."""
    try:
        handle = mod.nvmlDeviceGetHandleByIndex(index)
    except errors as exc:
        return f"GPU {index}: no handle ({error_text(exc)})"
    try:
        mem = mod.nvmlDeviceGetMemoryInfo(handle)
        total, free, used = int(mem.total), int(mem.free), int(mem.used)
    except errors as exc:
        return f"GPU {index}: memory info unavailable ({error_text(exc)})"

    name = guard(errors, lambda: nvml_text(mod.nvmlDeviceGetName(handle))) or "unknown"
    pci = guard(errors, lambda: nvml_text(mod.nvmlDeviceGetPciInfo(handle).busId)) or None
    uuid = guard(errors, lambda: nvml_text(mod.nvmlDeviceGetUUID(handle))) or f"GPU-index-{index}"

    cc = guard(errors, lambda: mod.nvmlDeviceGetCudaComputeCapability(handle))
    compute_capability = f"{int(cc[0])}.{int(cc[1])}" if cc is not None else None

    util = guard(errors, lambda: mod.nvmlDeviceGetUtilizationRates(handle))
    util_gpu = int(util.gpu) if util is not None else None
    util_mem = int(util.memory) if util is not None else None

    sensor = getattr(mod, "NVML_TEMPERATURE_GPU", 0)
    temp = guard(errors, lambda: int(mod.nvmlDeviceGetTemperature(handle, sensor)))
    power_mw = guard(errors, lambda: int(mod.nvmlDeviceGetPowerUsage(handle)))
    mig = guard(errors, lambda: mod.nvmlDeviceGetMigMode(handle))  # [current, pending]

    return GpuInfo(
        index=index,
        uuid=uuid,
        name=name,
        memory_total_bytes=total,
        memory_free_bytes=free,
        memory_used_bytes=used,
        compute_capability=compute_capability,
        utilization_gpu=util_gpu,
        utilization_memory=util_mem,
        temperature_c=temp,
        power_w=power_mw / 1000.0 if power_mw is not None else None,
        pci_bus_id=pci,
        mig_enabled=bool(mig[0]) if mig is not None else None,
    )


def _detect_gpus(
    nvml: Any | None, level: int
) -> tuple[list[GpuInfo], str | None, str | None, str | None]:
    mod, error = nvml_start(nvml, level)
    if mod is None:
        return [], None, None, error
    errors = nvml_error_types(mod)
    gpus: list[GpuInfo] = []
    problems: list[str] = []
    try:
        driver = guard(errors, lambda: nvml_text(mod.nvmlSystemGetDriverVersion()))
        cuda = _cuda_version(mod, errors)
        try:
            count = int(mod.nvmlDeviceGetCount())
        except errors as exc:
            count = 0
            problems.append(f"device count unavailable ({error_text(exc)})")
        for index in range(count):
            result = _read_device(mod, index, errors)
            if isinstance(result, GpuInfo):
                gpus.append(result)
            else:
                logger.warning("skipping %s", result)
                problems.append(result)
    except Exception as exc:  # a bug in a driver binding must not stop the worker starting
        problems.append(f"{type(exc).__name__}: {error_text(exc)}")
        logger.warning("GPU detection failed: %s", problems[-1])
        return gpus, None, None, "; ".join(problems)
    finally:
        nvml_stop(mod)
    return gpus, driver, cuda, "; ".join(problems) or None


def detect_gpus(
    nvml: Any | None = None,
) -> tuple[list[GpuInfo], str | None, str | None, str | None]:
    """Detect NVIDIA GPUs through NVML: ``(gpus, driver_version, cuda_version, error)``.

    No GPU (no NVML library, no driver, no ``pynvml``) gives ``([], None, None, reason)`` and one
    INFO log line; it never raises. ``nvml`` replaces the ``pynvml`` module (tests).
    """
    gpus, driver, cuda, error = _detect_gpus(nvml, logging.INFO)
    if gpus:
        logger.info(
            "detected %d NVIDIA GPU(s): %s (driver %s, CUDA %s)",
            len(gpus),
            ", ".join(f"{g.name} {g.memory_gb} GiB" for g in gpus),
            driver or "?",
            cuda or "?",
        )
    return gpus, driver, cuda, error


def load_psutil(psutil_mod: Any | None) -> Any | None:
    if psutil_mod is not None:
        return psutil_mod
    try:
        return importlib.import_module("psutil")
    except ImportError:  # pragma: no cover - psutil is a worker dependency
        return None


def _fallback_ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 0


def detect_host(
    disk_path: str | None, psutil_mod: Any | None = None
) -> tuple[int, int, int | None, int | None, str]:
    """Host facts: ``(cpu_cores, ram_bytes, ram_available_bytes, disk_free_bytes, disk_path)``.

    CPU cores are logical cores (1 if unknown). ``disk_path`` defaults to the current directory; a
    path that does not exist (or cannot be read) gives ``disk_free_bytes=None``.
    """
    ps = load_psutil(psutil_mod)
    path = disk_path if disk_path is not None else os.getcwd()

    cores: Any = None
    ram: int = 0
    available: int | None = None
    disk_free: int | None = None
    if ps is not None:
        try:
            cores = ps.cpu_count(logical=True)
        except Exception as exc:  # pragma: no cover - defensive
            logger.debug("cpu_count failed: %s", exc)
        try:
            vm = ps.virtual_memory()
            ram = int(vm.total)
            available = int(vm.available)
        except Exception as exc:  # pragma: no cover - defensive
            logger.warning("could not read memory size: %s", exc)
            ram = _fallback_ram_bytes()
        try:
            disk_free = int(ps.disk_usage(path).free)
        except OSError as exc:
            logger.debug("disk usage of %s unavailable: %s", path, exc)
    else:  # pragma: no cover - psutil is a worker dependency
        cores = os.cpu_count()
        ram = _fallback_ram_bytes()
        try:
            disk_free = shutil.disk_usage(path).free
        except OSError:
            disk_free = None
    cpu_cores = int(cores) if isinstance(cores, int) and cores > 0 else 1
    return cpu_cores, ram, available, disk_free, path


def detect(
    disk_path: str | None = None, nvml: Any | None = None, psutil_mod: Any | None = None
) -> HardwareInfo:
    """Detect GPUs and host facts. Never raises because of a missing GPU or driver."""
    gpus, driver, cuda, error = detect_gpus(nvml)
    cores, ram, available, disk_free, path = detect_host(disk_path, psutil_mod)
    return HardwareInfo(
        gpus=tuple(gpus),
        driver_version=driver,
        cuda_version=cuda,
        cpu_cores=cores,
        ram_bytes=ram,
        ram_available_bytes=available,
        disk_free_bytes=disk_free,
        disk_path=path,
        gpu_error=error,
    )
