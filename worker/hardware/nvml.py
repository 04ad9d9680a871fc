"""Talking to NVML (NVIDIA's ``nvidia-ml-py``, imported as ``pynvml``) without letting it fail a
worker: shared by start-up detection and the dashboard's live readings.

A missing NVML library, a driver that is not loaded or a missing ``pynvml`` module all mean
"CPU-only worker", reported with one log line at the caller's level. Every per-device call is
meant to go through :func:`guard`, so a board that does not support, say, power readings still
reports its name, UUID and memory.

``pynvml`` ships without type information; it is loaded through :func:`importlib.import_module`
and handled as ``Any`` inside the hardware modules only. The ``nvml`` parameters accept stand-in
modules for tests.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "error_text",
    "guard",
    "nvml_error_types",
    "nvml_start",
    "nvml_stop",
    "nvml_text",
]

# Detection's logger, so one logging setting covers every line hardware detection writes and
# the name operators already filter on stays the same.
logger = logging.getLogger("worker.hardware")

_T = TypeVar("_T")


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
