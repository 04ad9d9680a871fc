"""What a worker knows about its machine: the GPU and host facts, and the units they are kept in.

Memory figures are kept in bytes; the ``*_gb`` properties are GiB (bytes / 2**30) rounded to one
decimal, so the H200's 150,754,820,096 bytes read as 140.4 (``nvidia-smi``: 143,771 MiB).

Detection lives in :mod:`worker.hardware.detection`, configured replacements in
:mod:`worker.hardware.overrides`; this module holds only the data, so the worker's other modules
can pass it around without loading NVML or psutil.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GIB",
    "GpuInfo",
    "HardwareInfo",
    "bytes_to_gb",
    "format_cuda_version",
    "gb_to_bytes",
    "opt_gb",
]

GIB = 2**30


def bytes_to_gb(value: int) -> float:
    """Bytes to GiB, rounded to one decimal (150754820096 -> 140.4)."""
    return round(value / GIB, 1)


def gb_to_bytes(value: float) -> int:
    return round(value * GIB)


def opt_gb(value: int | None) -> float | None:
    return None if value is None else bytes_to_gb(value)


def format_cuda_version(value: int) -> str:
    """NVML's integer CUDA driver version to "major.minor" (13000 -> "13.0", 12080 -> "12.8")."""
    return f"{value // 1000}.{value % 1000 // 10}"


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
