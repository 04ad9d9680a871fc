"""Configured hardware figures (GPU_COUNT, GPU_MEMORY_GB, GPU_MODEL, CPU_CORES, RAM_GB) laid
over what was detected, so an operator can advertise less than the box has, or describe a
machine whose GPUs NVML cannot see."""

from __future__ import annotations

import dataclasses

from worker.hardware.info import GpuInfo, HardwareInfo, gb_to_bytes

__all__ = ["apply_overrides"]


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
                total = gb_to_bytes(gpu_memory_gb)
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
        total = gb_to_bytes(gpu_memory_gb)
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

    ram_bytes = info.ram_bytes if ram_gb is None else gb_to_bytes(ram_gb)
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
