"""Tests for worker.hardware against real NVIDIA H200 readings (tests/fixtures/hardware/h200/).

A fake ``pynvml`` module is built from ``nvml-probe.json`` (what NVIDIA's nvidia-ml-py returned on
an H200 machine) and a fake ``psutil`` from ``psutil.json``. The exception classes are the real
``pynvml`` ones when nvidia-ml-py is installed, so the no-driver path is exercised exactly as on a
CPU-only machine.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from worker.hardware.detection import detect, detect_gpus, detect_host
from worker.hardware.info import GpuInfo, HardwareInfo, format_cuda_version
from worker.hardware.overrides import apply_overrides
from worker.hardware.report import to_capabilities_hardware, to_report
from worker.hardware.utilization import sample_utilization, with_free_memory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hardware" / "h200"
PROBE: dict[str, Any] = json.loads((FIXTURES / "nvml-probe.json").read_text())
PSUTIL: dict[str, Any] = json.loads((FIXTURES / "psutil.json").read_text())
H200 = PROBE["devices"][0]
GIB = 2**30
# The one logger name every detection line carries (worker/hardware/detection.py and nvml.py).
HARDWARE_LOGGER = "worker.hardware"


def _nvml_exception_classes() -> dict[str, type[Exception]]:
    """The real ``pynvml`` exception classes, or look-alikes if nvidia-ml-py is not installed."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a project dependency
        messages = {
            3: "Not Supported",
            9: "Driver Not Loaded",
            12: "NVML Shared Library Not Found",
            15: "GPU is lost",
        }

        class FakeNVMLError(Exception):
            value = 999

            def __str__(self) -> str:
                return messages.get(self.value, f"NVML Error with code {self.value}")

        def sub(name: str, value: int) -> type[Exception]:
            return type(name, (FakeNVMLError,), {"value": value})

        return {
            "NVMLError": FakeNVMLError,
            "LibraryNotFound": sub("NVMLError_LibraryNotFound", 12),
            "DriverNotLoaded": sub("NVMLError_DriverNotLoaded", 9),
            "NotSupported": sub("NVMLError_NotSupported", 3),
            "GpuIsLost": sub("NVMLError_GpuIsLost", 15),
        }
    return {
        "NVMLError": pynvml.NVMLError,
        "LibraryNotFound": pynvml.NVMLError_LibraryNotFound,
        "DriverNotLoaded": pynvml.NVMLError_DriverNotLoaded,
        "NotSupported": pynvml.NVMLError_NotSupported,
        "GpuIsLost": pynvml.NVMLError_GpuIsLost,
    }


_NVML_EXC = _nvml_exception_classes()
NVMLError = _NVML_EXC["NVMLError"]
NVMLError_LibraryNotFound = _NVML_EXC["LibraryNotFound"]  # value 12
NVMLError_DriverNotLoaded = _NVML_EXC["DriverNotLoaded"]  # value 9
NVMLError_NotSupported = _NVML_EXC["NotSupported"]  # value 3
NVMLError_GpuIsLost = _NVML_EXC["GpuIsLost"]  # value 15


MemInfo = namedtuple("MemInfo", "total free used")
Utilization = namedtuple("Utilization", "gpu memory")


class FakeNvml:
    """The subset of ``pynvml`` that worker.hardware uses, answering from nvml-probe.json.

    ``fail`` maps a function name to an exception raised by it (for every device); ``as_bytes``
    makes the string functions return ``bytes`` as very old pynvml versions did.
    """

    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    def __init__(
        self,
        probe: dict[str, Any] = PROBE,
        *,
        fail: dict[str, Exception] | None = None,
        as_bytes: bool = False,
    ) -> None:
        self.probe = probe
        self.fail = fail or {}
        self.as_bytes = as_bytes
        self.init_calls = 0
        self.shutdown_calls = 0

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def _str(self, value: str) -> str | bytes:
        return value.encode() if self.as_bytes else value

    def _dev(self, handle: int) -> dict[str, Any]:
        return dict(self.probe["devices"][handle])

    def nvmlInit(self) -> None:  # noqa: N802
        self.init_calls += 1
        self._check("nvmlInit")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:  # noqa: N802
        self._check("nvmlSystemGetDriverVersion")
        return self._str(self.probe["driver"])

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:  # noqa: N802
        self._check("nvmlSystemGetCudaDriverVersion_v2")
        return int(self.probe["cuda_driver_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        self._check("nvmlSystemGetCudaDriverVersion")
        return int(self.probe["cuda_driver_version"])

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check("nvmlDeviceGetCount")
        return int(self.probe["count"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        self._check("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.probe["devices"]):
            raise NVMLError_GpuIsLost()
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:  # noqa: N802
        self._check("nvmlDeviceGetName")
        return self._str(self._dev(handle)["name"])

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:  # noqa: N802
        self._check("nvmlDeviceGetUUID")
        return self._str(self._dev(handle)["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> MemInfo:  # noqa: N802
        self._check("nvmlDeviceGetMemoryInfo")
        d = self._dev(handle)
        return MemInfo(total=d["mem_total"], free=d["mem_free"], used=d["mem_used"])

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Utilization:  # noqa: N802
        self._check("nvmlDeviceGetUtilizationRates")
        u = self._dev(handle)["util"]
        return Utilization(gpu=u["gpu"], memory=u["memory"])

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        self._check("nvmlDeviceGetTemperature")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return int(self._dev(handle)["temp_c"])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        self._check("nvmlDeviceGetPowerUsage")
        return int(self._dev(handle)["power_mw"])

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:  # noqa: N802
        self._check("nvmlDeviceGetCudaComputeCapability")
        major, minor = self._dev(handle)["cc"]
        return int(major), int(minor)

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:  # noqa: N802
        self._check("nvmlDeviceGetMigMode")
        return list(self._dev(handle)["mig_mode"])

    def nvmlDeviceGetPciInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self._check("nvmlDeviceGetPciInfo")
        return SimpleNamespace(busId=self._str(self._dev(handle)["pci_bus_id"]))


VirtualMemory = namedtuple("VirtualMemory", "total available percent used free")
DiskUsage = namedtuple("DiskUsage", "total used free percent")
RAM_AVAILABLE = 120 * GIB  # psutil.json does not record it; any value below the total will do
DISK_FREE = 500 * GIB


class FakePsutil:
    """The subset of ``psutil`` that worker.hardware uses, answering from psutil.json."""

    def __init__(self, *, logical: int | None = PSUTIL["cpu_logical"]) -> None:
        self.logical = logical
        self.disk_paths: list[str] = []

    def cpu_count(self, logical: bool = True) -> int | None:
        return self.logical if logical else PSUTIL["cpu_physical"]

    def cpu_percent(self, interval: float | None = None) -> float:
        assert interval is None  # never block the dashboard
        return 12.5

    def virtual_memory(self) -> VirtualMemory:
        total = int(PSUTIL["ram"])
        used = total - RAM_AVAILABLE
        return VirtualMemory(total, RAM_AVAILABLE, round(100 * used / total, 1), used, 0)

    def disk_usage(self, path: str) -> DiskUsage:
        self.disk_paths.append(path)
        if not Path(path).exists():
            raise FileNotFoundError(2, "No such file or directory", path)
        return DiskUsage(1000 * GIB, 500 * GIB, DISK_FREE, 50.0)


def _info_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == HARDWARE_LOGGER and r.levelno == logging.INFO]


def _h200_info(tmp_path: Path) -> HardwareInfo:
    return detect(str(tmp_path), nvml=FakeNvml(), psutil_mod=FakePsutil())


# --------------------------------------------------------------------------------------------------
# Detection from the H200 readings
# --------------------------------------------------------------------------------------------------


def test_h200_detected_from_nvml_probe(tmp_path: Path) -> None:
    nvml = FakeNvml()
    gpus, driver, cuda, error = detect_gpus(nvml)

    assert error is None
    assert driver == "580.159.04"
    assert cuda == "13.0"
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.index == 0
    assert gpu.name == "NVIDIA H200"
    assert gpu.uuid == "GPU-e631629d-2256-277a-404b-d2ae4d3da19f" == H200["uuid"]
    assert gpu.memory_total_bytes == 150754820096
    assert gpu.memory_free_bytes == H200["mem_free"]
    assert gpu.memory_used_bytes == H200["mem_used"]
    assert gpu.memory_gb == 140.4
    assert gpu.memory_free_gb == 139.8
    assert gpu.compute_capability == "9.0"
    assert gpu.utilization_gpu == 0
    assert gpu.utilization_memory == 0
    assert gpu.temperature_c == 35
    assert gpu.power_w == pytest.approx(118.252)
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.mig_enabled is False
    assert nvml.init_calls == 1
    assert nvml.shutdown_calls == 1


def test_h200_host_from_psutil_readings(tmp_path: Path) -> None:
    info = _h200_info(tmp_path)

    assert info.cpu_cores == 16
    assert info.ram_bytes == 135148564480
    assert info.ram_gb == round(135148564480 / GIB, 1) == 125.9
    assert info.ram_available_bytes == RAM_AVAILABLE
    assert info.ram_available_gb == 120.0
    assert info.disk_path == str(tmp_path)
    assert info.disk_free_bytes == DISK_FREE
    assert info.disk_free_gb == 500.0
    assert info.gpu_error is None
    assert info.gpu_count == 1
    assert info.driver_version == "580.159.04"
    assert info.cuda_version == "13.0"


def test_nvml_figures_agree_with_nvidia_smi() -> None:
    rows = list(csv.reader((FIXTURES / "nvidia-smi-query.csv").read_text().splitlines()))
    header = [h.strip() for h in rows[0]]
    smi = dict(zip(header, (v.strip() for v in rows[1]), strict=True))
    gpu = detect_gpus(FakeNvml())[0][0]

    mib = 2**20
    assert smi["memory.total [MiB]"] == "143771 MiB"
    assert gpu.memory_total_bytes // mib == 143771
    assert gpu.memory_total_bytes / mib == 143771.0
    # nvidia-smi rounds to whole MiB: 150109880320 B = 143155.94 MiB -> "143156 MiB".
    assert round(gpu.memory_free_bytes / mib) == int(smi["memory.free [MiB]"].split()[0]) == 143156
    # nvidia-smi's memory.used (0 MiB) leaves out the ~615 MiB the driver reserves; NVML counts it.
    assert gpu.memory_used_bytes // mib == 615
    assert smi["name"] == gpu.name
    assert smi["uuid"] == gpu.uuid
    assert smi["pci.bus_id"] == gpu.pci_bus_id
    assert int(smi["temperature.gpu"]) == gpu.temperature_c
    assert smi["utilization.gpu [%]"] == f"{gpu.utilization_gpu} %"
    assert smi["driver_version"] == detect_gpus(FakeNvml())[1]
    # The README's "140.4 GiB" is the same figure again.
    assert round(143771 / 1024, 1) == gpu.memory_gb


# --------------------------------------------------------------------------------------------------
# No GPU / partial support
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type", "message"),
    [
        (NVMLError_LibraryNotFound, "NVML Shared Library Not Found"),
        (NVMLError_DriverNotLoaded, "Driver Not Loaded"),
    ],
)
def test_no_driver_means_cpu_only_with_one_info_line(
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    exc_type: type[Exception],
    message: str,
) -> None:
    nvml = FakeNvml(fail={"nvmlInit": exc_type()})
    caplog.set_level(logging.DEBUG, logger=HARDWARE_LOGGER)

    info = detect(str(tmp_path), nvml=nvml, psutil_mod=FakePsutil())

    assert info.gpus == ()
    assert info.driver_version is None
    assert info.cuda_version is None
    assert info.gpu_error == message
    assert info.cpu_cores == 16
    infos = _info_records(caplog)
    assert len(infos) == 1
    assert infos[0].getMessage() == (
        f"no NVIDIA GPU detected ({message}); running as a CPU-only worker"
    )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert nvml.shutdown_calls == 0  # nvmlInit failed: nothing to shut down


def test_library_not_found_is_nvml_error_12() -> None:
    exc = NVMLError_LibraryNotFound()
    assert isinstance(exc, NVMLError)
    assert exc.value == 12  # type: ignore[attr-defined]
    assert str(exc) == "NVML Shared Library Not Found"


def test_missing_pynvml_module_means_cpu_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    caplog.set_level(logging.INFO, logger=HARDWARE_LOGGER)

    gpus, driver, cuda, error = detect_gpus()

    assert (gpus, driver, cuda) == ([], None, None)
    assert error is not None
    assert "pynvml not installed" in error
    infos = _info_records(caplog)
    assert len(infos) == 1
    assert "running as a CPU-only worker" in infos[0].getMessage()


def test_not_supported_sensors_still_yield_the_gpu() -> None:
    nvml = FakeNvml(
        fail={
            "nvmlDeviceGetTemperature": NVMLError_NotSupported(),
            "nvmlDeviceGetPowerUsage": NVMLError_NotSupported(),
            "nvmlDeviceGetUtilizationRates": NVMLError_NotSupported(),
            "nvmlDeviceGetMigMode": NVMLError_NotSupported(),
            "nvmlDeviceGetCudaComputeCapability": NVMLError_NotSupported(),
        }
    )
    gpus, _, _, error = detect_gpus(nvml)

    assert error is None
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.name == "NVIDIA H200"
    assert gpu.memory_gb == 140.4
    assert gpu.temperature_c is None
    assert gpu.power_w is None
    assert gpu.utilization_gpu is None
    assert gpu.utilization_memory is None
    assert gpu.mig_enabled is None
    assert gpu.compute_capability is None
    assert nvml.shutdown_calls == 1
    assert (
        "compute_capability"
        not in to_capabilities_hardware(
            HardwareInfo((gpu,), None, None, 1, GIB, None, None, None, None)
        )["gpus"][0]
    )


def test_bytes_strings_are_decoded() -> None:
    gpus, driver, _, _ = detect_gpus(FakeNvml(as_bytes=True))

    assert driver == "580.159.04"
    assert gpus[0].name == "NVIDIA H200"
    assert isinstance(gpus[0].name, str)
    assert gpus[0].uuid == H200["uuid"]
    assert gpus[0].pci_bus_id == "00000000:00:06.0"


def test_cuda_version_falls_back_to_v1_and_formats() -> None:
    probe = {**PROBE, "cuda_driver_version": 12080}
    nvml = FakeNvml(probe, fail={"nvmlSystemGetCudaDriverVersion_v2": NVMLError_NotSupported()})
    assert detect_gpus(nvml)[2] == "12.8"
    assert format_cuda_version(13000) == "13.0"
    assert format_cuda_version(12040) == "12.4"
    assert format_cuda_version(11080) == "11.8"

    both = FakeNvml(
        fail={
            "nvmlSystemGetCudaDriverVersion_v2": NVMLError_NotSupported(),
            "nvmlSystemGetCudaDriverVersion": NVMLError_NotSupported(),
        }
    )
    assert detect_gpus(both)[2] is None


def test_mig_enabled_reads_current_mode() -> None:
    device = {**H200, "mig_mode": [1, 1]}
    gpus = detect_gpus(FakeNvml({**PROBE, "devices": [device]}))[0]
    assert gpus[0].mig_enabled is True


def test_unreadable_device_is_skipped_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    second = {**H200, "index": 1, "uuid": "GPU-second"}
    probe = {**PROBE, "count": 3, "devices": [H200, second]}  # device 2 is "lost"
    nvml = FakeNvml(probe)
    caplog.set_level(logging.INFO, logger=HARDWARE_LOGGER)

    gpus, driver, _, error = detect_gpus(nvml)

    assert [g.uuid for g in gpus] == [H200["uuid"], "GPU-second"]
    assert [g.index for g in gpus] == [0, 1]
    assert driver == "580.159.04"
    assert error is not None
    assert "GPU 2" in error
    assert "GPU is lost" in error
    assert nvml.shutdown_calls == 1
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_device_count_failure_still_shuts_down() -> None:
    nvml = FakeNvml(fail={"nvmlDeviceGetCount": NVMLError_GpuIsLost()})
    gpus, driver, _, error = detect_gpus(nvml)
    assert gpus == []
    assert driver == "580.159.04"
    assert error is not None
    assert "GPU is lost" in error
    assert nvml.shutdown_calls == 1


def test_unexpected_exception_is_not_fatal_and_shuts_down() -> None:
    nvml = FakeNvml(fail={"nvmlDeviceGetCount": RuntimeError("binding bug")})
    gpus, _, _, error = detect_gpus(nvml)
    assert gpus == []
    assert error is not None
    assert "binding bug" in error
    assert nvml.shutdown_calls == 1


def test_unexpected_init_exception_is_not_fatal() -> None:
    nvml = FakeNvml(fail={"nvmlInit": OSError("libnvidia-ml.so.1: cannot open")})
    gpus, driver, cuda, error = detect_gpus(nvml)
    assert (gpus, driver, cuda) == ([], None, None)
    assert error is not None
    assert "OSError" in error


# --------------------------------------------------------------------------------------------------
# Host facts
# --------------------------------------------------------------------------------------------------


def test_host_missing_disk_path_gives_none(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    cores, ram, available, disk_free, path = detect_host(str(missing), FakePsutil())
    assert (cores, ram, available) == (16, PSUTIL["ram"], RAM_AVAILABLE)
    assert disk_free is None
    assert path == str(missing)


def test_host_defaults_to_current_dir_and_one_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ps = FakePsutil(logical=None)
    cores, _, _, disk_free, path = detect_host(None, ps)
    assert cores == 1
    assert disk_free == DISK_FREE
    assert Path(path) == tmp_path
    assert ps.disk_paths == [path]


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------


def _no_gpu_info() -> HardwareInfo:
    return HardwareInfo((), None, None, 8, 32 * GIB, 30 * GIB, None, None, "no GPU")


def test_overrides_none_change_nothing(tmp_path: Path) -> None:
    info = _h200_info(tmp_path)
    assert apply_overrides(info) == info
    assert (
        apply_overrides(
            info, gpu_count=None, gpu_memory_gb=None, gpu_model=None, cpu_cores=None, ram_gb=None
        )
        == info
    )


def test_override_gpu_count_zero_means_no_gpus(tmp_path: Path) -> None:
    out = apply_overrides(_h200_info(tmp_path), gpu_count=0)
    assert out.gpus == ()
    assert to_capabilities_hardware(out)["gpus"] == []


def test_override_gpu_count_below_detected_keeps_first_n(tmp_path: Path) -> None:
    second = {**H200, "index": 1, "uuid": "GPU-second"}
    third = {**H200, "index": 2, "uuid": "GPU-third"}
    probe = {**PROBE, "count": 3, "devices": [H200, second, third]}
    info = detect(str(tmp_path), nvml=FakeNvml(probe), psutil_mod=FakePsutil())
    assert info.gpu_count == 3

    out = apply_overrides(info, gpu_count=2)
    assert [g.uuid for g in out.gpus] == [H200["uuid"], "GPU-second"]
    assert out.gpus == info.gpus[:2]


def test_override_gpu_count_above_detected_synthesizes_from_first(tmp_path: Path) -> None:
    info = _h200_info(tmp_path)
    out = apply_overrides(info, gpu_count=3)

    assert len(out.gpus) == 3
    assert out.gpus[0] == info.gpus[0]
    for i in (1, 2):
        g = out.gpus[i]
        assert g.index == i
        assert g.uuid == f"override-gpu-{i}"
        assert g.name == "NVIDIA H200"
        assert g.memory_total_bytes == info.gpus[0].memory_total_bytes
        assert g.memory_gb == 140.4
        assert g.memory_free_bytes <= g.memory_total_bytes
        assert g.compute_capability == "9.0"


def test_override_gpu_count_without_detected_gpu() -> None:
    out = apply_overrides(_no_gpu_info(), gpu_count=2, gpu_memory_gb=24, gpu_model="RTX 4090")
    assert [(g.index, g.uuid, g.name, g.memory_gb) for g in out.gpus] == [
        (0, "override-gpu-0", "RTX 4090", 24.0),
        (1, "override-gpu-1", "RTX 4090", 24.0),
    ]
    assert all(g.memory_free_gb == 24.0 for g in out.gpus)
    assert all(g.compute_capability is None for g in out.gpus)

    bare = apply_overrides(_no_gpu_info(), gpu_count=1)
    assert bare.gpus[0].name == "unknown"
    assert bare.gpus[0].memory_total_bytes == 0


def test_override_gpu_memory_applies_to_every_gpu(tmp_path: Path) -> None:
    info = _h200_info(tmp_path)
    smaller = apply_overrides(info, gpu_count=2, gpu_memory_gb=80)
    for g in smaller.gpus:
        assert g.memory_total_bytes == 80 * GIB
        assert g.memory_gb == 80.0
        assert g.memory_free_bytes == 80 * GIB  # min(139.8 GiB free, 80 GiB total)
        assert g.memory_used_bytes <= g.memory_total_bytes

    larger = apply_overrides(info, gpu_memory_gb=160.5)
    g = larger.gpus[0]
    assert g.memory_gb == 160.5
    assert g.memory_free_bytes == info.gpus[0].memory_free_bytes  # free stays as measured


def test_override_gpu_model_renames_every_gpu(tmp_path: Path) -> None:
    out = apply_overrides(_h200_info(tmp_path), gpu_count=2, gpu_model="H200-SXM")
    assert [g.name for g in out.gpus] == ["H200-SXM", "H200-SXM"]
    assert out.gpus[0].uuid == H200["uuid"]


def test_override_model_or_memory_without_gpus_adds_none() -> None:
    out = apply_overrides(_no_gpu_info(), gpu_memory_gb=24, gpu_model="RTX 4090")
    assert out.gpus == ()


def test_override_cpu_and_ram(tmp_path: Path) -> None:
    info = _h200_info(tmp_path)
    out = apply_overrides(info, cpu_cores=4, ram_gb=16)
    assert out.cpu_cores == 4
    assert out.ram_gb == 16.0
    assert out.ram_bytes == 16 * GIB
    assert out.ram_available_bytes == 16 * GIB  # capped at the new total
    assert out.gpus == info.gpus

    frozen = out
    with pytest.raises(AttributeError):
        frozen.cpu_cores = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"gpu_count": -1}, {"gpu_memory_gb": -1.0}, {"ram_gb": -2.0}, {"cpu_cores": 0}],
)
def test_invalid_overrides_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        apply_overrides(_no_gpu_info(), **kwargs)


# --------------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------------


def test_capabilities_hardware_shape(tmp_path: Path) -> None:
    doc = to_capabilities_hardware(_h200_info(tmp_path))
    assert doc == {
        "gpus": [
            {
                "index": 0,
                "uuid": "GPU-e631629d-2256-277a-404b-d2ae4d3da19f",
                "name": "NVIDIA H200",
                "memory_gb": 140.4,
                "memory_free_gb": 139.8,
                "compute_capability": "9.0",
            }
        ],
        "cpu_cores": 16,
        "ram_gb": 125.9,
    }
    assert json.loads(json.dumps(doc)) == doc
    assert to_capabilities_hardware(_no_gpu_info()) == {"gpus": [], "cpu_cores": 8, "ram_gb": 32.0}


def test_report_has_every_field_and_is_json(tmp_path: Path) -> None:
    report = to_report(_h200_info(tmp_path))
    assert json.loads(json.dumps(report)) == report
    assert report["driver_version"] == "580.159.04"
    assert report["cuda_version"] == "13.0"
    assert report["gpu_error"] is None
    assert report["gpu_count"] == 1
    assert report["cpu_cores"] == 16
    assert report["ram_gb"] == 125.9
    assert report["disk_free_gb"] == 500.0
    assert report["disk_path"] == str(tmp_path)
    gpu = report["gpus"][0]
    assert gpu["power_w"] == 118.3
    assert gpu["temperature_c"] == 35
    assert gpu["utilization_gpu"] == 0
    assert gpu["memory_gb"] == 140.4
    assert gpu["memory_total_bytes"] == 150754820096
    assert gpu["pci_bus_id"] == "00000000:00:06.0"
    assert gpu["mig_enabled"] is False
    field_names = {f for f in GpuInfo.__dataclass_fields__}
    assert field_names <= set(gpu)


def test_report_without_gpu(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    nvml = FakeNvml(fail={"nvmlInit": NVMLError_LibraryNotFound()})
    report = to_report(detect(str(tmp_path / "nope"), nvml=nvml, psutil_mod=FakePsutil()))
    assert report["gpus"] == []
    assert report["gpu_error"] == "NVML Shared Library Not Found"
    assert report["disk_free_bytes"] is None
    assert report["disk_free_gb"] is None


# --------------------------------------------------------------------------------------------------
# Live sampling
# --------------------------------------------------------------------------------------------------


def test_sample_utilization_h200() -> None:
    nvml = FakeNvml()
    sample = sample_utilization(nvml, FakePsutil())
    assert sample["cpu_percent"] == 12.5
    assert sample["ram_total_bytes"] == PSUTIL["ram"]
    assert sample["ram_used_bytes"] == PSUTIL["ram"] - RAM_AVAILABLE
    assert sample["ram_total_gb"] == 125.9
    assert sample["gpu_error"] is None
    assert sample["gpus"] == [
        {
            "index": 0,
            "uuid": H200["uuid"],
            "utilization_gpu": 0,
            "utilization_memory": 0,
            "memory_total_bytes": H200["mem_total"],
            "memory_total_gb": 140.4,
            "memory_used_bytes": H200["mem_used"],
            "memory_used_gb": 0.6,
            "memory_free_bytes": H200["mem_free"],
            "memory_free_gb": 139.8,
            "temperature_c": 35,
            "power_w": 118.3,
        }
    ]
    assert json.loads(json.dumps(sample)) == sample
    assert nvml.shutdown_calls == 1


def test_sample_utilization_without_gpu_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=HARDWARE_LOGGER)
    nvml = FakeNvml(fail={"nvmlInit": NVMLError_LibraryNotFound()})
    for _ in range(3):
        sample = sample_utilization(nvml, FakePsutil())
        assert sample["gpus"] == []
        assert sample["gpu_error"] == "NVML Shared Library Not Found"
        assert sample["cpu_percent"] == 12.5
    assert caplog.records == []  # a periodic refresh must not spam the log


def test_sample_utilization_not_supported_fields() -> None:
    nvml = FakeNvml(
        fail={
            "nvmlDeviceGetUtilizationRates": NVMLError_NotSupported(),
            "nvmlDeviceGetPowerUsage": NVMLError_NotSupported(),
        }
    )
    gpu = sample_utilization(nvml, FakePsutil())["gpus"][0]
    assert gpu["utilization_gpu"] is None
    assert gpu["power_w"] is None
    assert gpu["memory_total_gb"] == 140.4


# --------------------------------------------------------------------------------------------------
# The real thing on this machine (CI and development boxes have no GPU; a GPU box works too)
# --------------------------------------------------------------------------------------------------


def test_real_detect_on_this_machine(tmp_path: Path) -> None:
    info = detect(str(tmp_path))
    assert info.cpu_cores >= 1
    assert info.ram_bytes > 0
    assert info.disk_free_bytes is not None
    if not info.gpus:
        assert info.gpu_error
    for gpu in info.gpus:
        assert gpu.memory_total_bytes > 0
        assert gpu.uuid
    json.dumps(to_report(info))
    json.dumps(to_capabilities_hardware(info))
    json.dumps(sample_utilization())


def test_free_memory_follows_live_readings_capped_by_the_configured_total() -> None:
    nvml = FakeNvml()
    detected = detect(nvml=nvml, psutil_mod=FakePsutil())
    sample = sample_utilization(nvml, FakePsutil())
    sample["gpus"][0]["memory_free_bytes"] = 20 * GIB  # a model got loaded meanwhile
    refreshed = with_free_memory(detected, sample)
    assert refreshed.gpus[0].memory_free_gb == 20.0
    assert refreshed.gpus[0].memory_gb == detected.gpus[0].memory_gb
    # GPU_MEMORY_GB=16 caps what the worker admits to, free memory included.
    capped = apply_overrides(detected, gpu_memory_gb=16.0)
    assert with_free_memory(capped, sample).gpus[0].memory_free_gb == 16.0
    # Synthesised GPUs (GPU_COUNT beyond the detected ones) are left as they were.
    more = apply_overrides(detected, gpu_count=2)
    assert with_free_memory(more, sample).gpus[1] == more.gpus[1]
