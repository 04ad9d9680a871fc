"""Hardware detection for a GPU worker (NVML through ``pynvml``, host facts through ``psutil``).

Detection never raises because a machine has no GPU: a missing NVML library, a driver that is not
loaded or a missing ``pynvml`` module all mean "CPU-only worker", reported with one INFO log line.
Every per-device NVML call is guarded on its own, so a board that does not support, say, power
readings still reports its name, UUID and memory.

``pynvml`` (NVIDIA's ``nvidia-ml-py``) and ``psutil`` ship without type information; both are
loaded through :func:`importlib.import_module` and handled as ``Any`` inside this module only. The
``nvml`` / ``psutil_mod`` parameters accept stand-in modules for tests.

Units: memory figures are kept in bytes; the ``*_gb`` properties are GiB (bytes / 2**30) rounded
to one decimal, so the H200's 150,754,820,096 bytes read as 140.4 (``nvidia-smi``: 143,771 MiB).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "GIB",
    "GpuInfo",
    "HardwareInfo",
    "apply_overrides",
    "bytes_to_gb",
    "detect",
    "detect_gpus",
    "detect_host",
    "error_text",
    "format_cuda_version",
    "guard",
    "load_psutil",
    "nvml_error_types",
    "nvml_start",
    "nvml_stop",
    "nvml_text",
    "opt_gb",
]

logger = logging.getLogger(__name__)

GIB = 2**30

_T = TypeVar("_T")


def bytes_to_gb(value: int) -> float:
    """Bytes to GiB, rounded to one decimal (150754820096 -> 140.4)."""
    return round(value / GIB, 1)


def _gb_to_bytes(value: float) -> int:
    return round(value * GIB)


def opt_gb(value: int | None) -> float | None:
    return None if value is None else bytes_to_gb(value)


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA driver version to "major.minor" (13000 -> "13.0", 12080 -> "12.8")."""
    return f"{value // 1000}.{value % 1000 // 10}"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it (index in NVML/PCI bus order)."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    memory_used_bytes: int
    compute_capability: str | None = None  # "9.0"
    utilization_gpu: int | None = None  # percent
    utilization_memory: int | None = None  # percent
    temperature_c: int | None = None
    power_w: float | None = None
    pci_bus_id: str | None = None
    mig_enabled: bool | None = None

    @property
    def memory_gb(self) -> float:
        return bytes_to_gb(self.memory_total_bytes)

    @property
    def memory_free_gb(self) -> float:
        return bytes_to_gb(self.memory_free_bytes)

    @property
    def memory_used_gb(self) -> float:
        return bytes_to_gb(self.memory_used_bytes)


@dataclass(frozen=True)
class HardwareInfo:
    """Everything the worker knows about its machine."""

    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    cuda_version: str | None  # "13.0"
    cpu_cores: int
    ram_bytes: int
    ram_available_bytes: int | None
    disk_free_bytes: int | None
    disk_path: str | None
    gpu_error: str | None  # why no (or not every) GPU was detected

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def ram_gb(self) -> float:
        return bytes_to_gb(self.ram_bytes)

    @property
    def ram_available_gb(self) -> float | None:
        return opt_gb(self.ram_available_bytes)

    @property
    def disk_free_gb(self) -> float | None:
        return opt_gb(self.disk_free_bytes)

    @property
    def gpu_memory_total_gb(self) -> float:
        return bytes_to_gb(sum(g.memory_total_bytes for g in self.gpus))


# --------------------------------------------------------------------------------------------------
# NVML helpers
# --------------------------------------------------------------------------------------------------


def nvml_text(value: Any) -> str:
    """NVML strings: ``str`` in current pynvml, ``bytes`` in very old versions."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace").rstrip("\x00")
    return str(value).rstrip("\x00")


def error_text(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pragma: no cover - a broken __str__ must not break detection
        text = ""
    return text or type(exc).__name__


def nvml_error_types(nvml: Any) -> tuple[type[BaseException], ...]:
    """What a guarded NVML call may raise: the module's NVMLError and a missing function."""
    err = getattr(nvml, "NVMLError", None)
    if isinstance(err, type) and issubclass(err, BaseException):
        return (err, AttributeError)
    return (AttributeError,)


def guard(errors: tuple[type[BaseException], ...], call: Callable[[], _T]) -> _T | None:
    try:
        return call()
    except errors as exc:
        logger.debug("NVML call failed: %s", error_text(exc))
        return None


def _load_nvml(nvml: Any | None) -> tuple[Any | None, str | None]:
    if nvml is not None:
        return nvml, None
    try:
        return importlib.import_module("pynvml"), None
    except ImportError as exc:
        return None, f"pynvml not installed: {error_text(exc)}"


def nvml_start(nvml: Any | None, level: int) -> tuple[Any | None, str | None]:
    """Load and initialise NVML. Returns (module, None) or (None, error) after one log line."""
    mod, error = _load_nvml(nvml)
    if mod is None:
        logger.log(level, "no NVIDIA GPU detected (%s); running as a CPU-only worker", error)
        return None, error
    try:
        mod.nvmlInit()
    except nvml_error_types(mod) as exc:
        error = error_text(exc)
        logger.log(level, "no NVIDIA GPU detected (%s); running as a CPU-only worker", error)
        return None, error
    except Exception as exc:  # unexpected (e.g. OSError from ctypes): still not fatal
        error = f"{type(exc).__name__}: {error_text(exc)}"
        logger.warning("NVML initialisation failed (%s); running as a CPU-only worker", error)
        return None, error
    return mod, None


def nvml_stop(mod: Any) -> None:
    try:
        mod.nvmlShutdown()
    except Exception as exc:  # shutting down must never mask the result
        logger.debug("nvmlShutdown failed: %s", error_text(exc))


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


# --------------------------------------------------------------------------------------------------
# Public detection API
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Overrides from the environment (GPU_COUNT, GPU_MEMORY_GB, GPU_MODEL, CPU_CORES, RAM_GB)
# --------------------------------------------------------------------------------------------------


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def apply_overrides(
    info: HardwareInfo,
    *,
    gpu_count: int | None = None,
    gpu_memory_gb: float | None = None,
    gpu_model: str | None = None,
    cpu_cores: int | None = None,
    ram_gb: float | None = None,
) -> HardwareInfo:
    """Return ``info`` with configured values replacing detected ones (``None`` = keep detected).

    - ``gpu_count``: 0 -> no GPUs; fewer than detected -> the first N; more than detected (or none
      detected) -> extra GPUs are synthesised (index i, uuid ``override-gpu-{i}``, name from
      ``gpu_model`` / the first detected GPU / "unknown", memory from ``gpu_memory_gb`` / the first
      detected GPU, compute capability from the first detected GPU).
    - ``gpu_memory_gb``: every GPU's total memory (free = min(free, total), used <= total).
    - ``gpu_model``: every GPU's name.
    - ``cpu_cores``, ``ram_gb``: replace the host figures (available RAM is capped at the total).

    Raises ``ValueError`` for negative values (a configuration error, not a detection one).
    """
    _check_non_negative("GPU_COUNT", gpu_count)
    _check_non_negative("GPU_MEMORY_GB", gpu_memory_gb)
    _check_non_negative("RAM_GB", ram_gb)
    if cpu_cores is not None and cpu_cores < 1:
        raise ValueError(f"CPU_CORES must be >= 1, got {cpu_cores!r}")
    model = gpu_model.strip() if gpu_model is not None and gpu_model.strip() else None

    gpus = list(info.gpus)
    if gpu_count is not None:
        if gpu_count <= len(gpus):
            gpus = gpus[:gpu_count]
        else:
            template = info.gpus[0] if info.gpus else None
            if gpu_memory_gb is not None:
                total = _gb_to_bytes(gpu_memory_gb)
            else:
                total = template.memory_total_bytes if template is not None else 0
            for index in range(len(gpus), gpu_count):
                gpus.append(
                    GpuInfo(
                        index=index,
                        uuid=f"override-gpu-{index}",
                        name=model or (template.name if template is not None else "unknown"),
                        memory_total_bytes=total,
                        memory_free_bytes=total,
                        memory_used_bytes=0,
                        compute_capability=(
                            template.compute_capability if template is not None else None
                        ),
                    )
                )
    if gpu_memory_gb is not None:
        total = _gb_to_bytes(gpu_memory_gb)
        gpus = [
            dataclasses.replace(
                g,
                memory_total_bytes=total,
                memory_free_bytes=min(g.memory_free_bytes, total),
                memory_used_bytes=min(g.memory_used_bytes, total),
            )
            for g in gpus
        ]
    if model is not None:
        gpus = [dataclasses.replace(g, name=model) for g in gpus]

    ram_bytes = info.ram_bytes if ram_gb is None else _gb_to_bytes(ram_gb)
    available = info.ram_available_bytes
    if available is not None:
        available = min(available, ram_bytes)
    return dataclasses.replace(
        info,
        gpus=tuple(gpus),
        cpu_cores=info.cpu_cores if cpu_cores is None else cpu_cores,
        ram_bytes=ram_bytes,
        ram_available_bytes=available,
    )
