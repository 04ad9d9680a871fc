"""`emp-worker` / `python -m worker` / `python3 worker.pyz`: the worker's command line.

    emp-worker            run the worker (configuration from the environment / .env.worker)
    emp-worker detect     print the capabilities this worker would register, as JSON
    emp-worker --version  print the version and build tag
    emp-worker --burst    exit once nothing is left to claim (batch runs, tests)

SIGTERM or SIGINT stops claiming and lets running jobs finish within
WORKER_SHUTDOWN_GRACE_SECONDS; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import msgspec
import orjson

from shared import __version__
from shared.config import ConfigError, load_environment
from shared.event_loop import run_loop
from shared.logs import setup_logging
from worker.capabilities import build_capabilities
from worker.connectors import ConnectorLoadError, UnknownConnector, load_connector
from worker.connectors.base import Connector
from worker.hardware.detection import detect
from worker.hardware.info import HardwareInfo
from worker.hardware.overrides import apply_overrides
from worker.hardware.report import to_report
from worker.settings import WorkerSettings, env_file_path

logger = logging.getLogger("worker")


def build_tag() -> str:
    """The platform and Python the running code was built for (set by build.py in the pyz)."""
    return os.environ.get("EMP_BUILD_TAG", "source")


def configure_logging(settings: WorkerSettings) -> None:
    """The worker's log lines on stderr: dated text (or JSON lines), secrets masked."""
    setup_logging(settings.log_level, settings.log_format, layout="dated")
    # The dashboard's uvicorn announces start and stop at INFO; the worker says what matters.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def load_settings(*, need_redis: bool = True) -> WorkerSettings:
    return WorkerSettings.from_env(load_environment(env_file_path()), need_redis=need_redis)


def detect_hardware(settings: WorkerSettings) -> HardwareInfo:
    info = detect(settings.models_dir)
    return apply_overrides(
        info,
        gpu_count=settings.gpu_count,
        gpu_memory_gb=settings.gpu_memory_gb,
        gpu_model=settings.gpu_model,
        cpu_cores=settings.cpu_cores,
        ram_gb=settings.ram_gb,
    )


def load_connectors(settings: WorkerSettings) -> dict[str, Connector]:
    connectors: dict[str, Connector] = {}
    for service in settings.services:
        connector = load_connector(service, settings.env)
        connectors[connector.name] = connector
    return connectors


def cmd_detect(settings: WorkerSettings) -> int:
    hardware = detect_hardware(settings)
    caps = build_capabilities(settings, hardware, settings.services)
    report = {
        "worker_id": settings.worker_id,
        "version": __version__,
        "build": build_tag(),
        "capabilities": msgspec.to_builtins(caps),
        "hardware": to_report(hardware),
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def run_worker(
    settings: WorkerSettings, connectors: dict[str, Connector], *, burst: bool
) -> int:
    from worker.runtime import Worker  # imported here so `detect` stays light

    worker = Worker(settings, connectors, detect_hardware(settings), burst=burst)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        logger.info("%s received", signal.Signals(signum).name)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    dashboard = None
    if settings.dashboard_enabled:
        from worker.dashboard.server import DashboardServer

        dashboard = DashboardServer(worker, settings)
        worker.dashboard_url = await dashboard.start()
        logger.info("Worker %s dashboard available at %s", worker.id, worker.dashboard_url)
    try:
        await worker.run()
    finally:
        if dashboard is not None:
            await dashboard.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emp-worker", description="emp-redis GPU worker")
    parser.add_argument("command", nargs="?", choices=["run", "detect"], default="run")
    parser.add_argument("--version", action="store_true", help="print version and build tag")
    parser.add_argument("--burst", action="store_true", help="exit when nothing is claimable")
    args = parser.parse_args(argv)
    if args.version:
        print(f"emp-worker {__version__} ({build_tag()})")
        return 0
    try:
        settings = load_settings(need_redis=args.command != "detect")
    except ConfigError as exc:
        print(f"emp-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if args.command == "detect":
        return cmd_detect(settings)
    try:
        connectors = load_connectors(settings)
    except (UnknownConnector, ConnectorLoadError) as exc:
        print(f"emp-worker: configuration error: SERVICES: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"emp-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return run_loop(run_worker(settings, connectors, burst=args.burst))
    except ConfigError as exc:  # e.g. WORKER_DASHBOARD_PORT already taken
        print(f"emp-worker: configuration error: {exc}", file=sys.stderr)
        return 2
