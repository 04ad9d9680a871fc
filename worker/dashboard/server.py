"""Serve the per-worker dashboard from inside the worker process.

`DashboardServer` runs uvicorn as a task in the worker's own event loop, so the page reads the
live `Worker` object without locks or copies. Two things differ from a stand-alone uvicorn:

- Signals stay with the worker. `uvicorn.Server.serve()` installs SIGINT/SIGTERM handlers and
  re-raises the captured signal after shutdown, which would cut the worker's graceful drain
  short; `_EmbeddedServer` installs nothing, and `stop()` ends the server when the worker is done.
- The listening socket is bound here, before uvicorn starts, so a port clash is reported at once
  as a configuration error naming WORKER_DASHBOARD_PORT, and an automatic port is chosen without
  a race: the socket is held from the moment the port is found free. Automatic ports are tried
  from 1511 upwards (the seed's convention, so the workers of one box get 1511, 1512, ...), then
  any port the kernel offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from shared.config import ConfigError
from worker.dashboard.app import create_app
from worker.dashboard.worker_view import DashboardWorker
from worker.settings import WorkerSettings

__all__ = ["DashboardServer"]

# The name these lines have always carried (operators filter on it), not the module's.
logger = logging.getLogger("worker.dashboard")

FIRST_PORT = 1511
PORTS_TRIED = 100
SHUTDOWN_SECONDS = 3  # open browser tabs must not hold up the worker's exit
_LOOPBACK_OR_ANY = {"", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling, announcing when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port). Raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # now: a bound but idle socket could still be shared on Linux
    except BaseException:
        sock.close()
        raise
    return sock


def bind_dashboard_socket(host: str, port: int | None) -> socket.socket:
    """The fixed `port`, or the first free one from 1511, or any; errors name the setting."""
    try:
        if port:
            try:
                return _bind(host, port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise ConfigError(
                        "WORKER_DASHBOARD_PORT",
                        f"cannot listen on {host}:{port} ({exc.strerror}); another process, "
                        "perhaps another worker, may hold it: choose a free port, or leave "
                        "WORKER_DASHBOARD_PORT unset to pick one automatically",
                    ) from exc
                raise
        for candidate in range(FIRST_PORT, FIRST_PORT + PORTS_TRIED):
            try:
                return _bind(host, candidate)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise  # a host problem: no other port will do better
        return _bind(host, 0)
    except socket.gaierror as exc:
        raise ConfigError("WORKER_DASHBOARD_HOST", f"{host!r}: {exc.strerror}") from exc
    except OSError as exc:
        raise ConfigError(
            "WORKER_DASHBOARD_HOST", f"cannot listen on {host}: {exc.strerror or exc}"
        ) from exc


def dashboard_url(host: str, port: int) -> str:
    """What to print: localhost when the server is reachable there, else the bound address."""
    if host in _LOOPBACK_OR_ANY:
        return f"http://localhost:{port}"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def http_protocol(settings: WorkerSettings) -> Any:
    """The hub's connection guard (shared/http_guard.py: a head deadline, a cap on open
    connections, idle connections closed), bound to the dashboard's own limits. Without it
    one slow client held a connection for as long as it liked and idle ones were never
    closed. It needs httptools, which worker.pyz ships; where it is missing anyway the
    dashboard says so and runs on uvicorn's h11 protocol, with uvicorn's keep-alive timeout
    as its only bound."""
    try:
        from shared.http_guard import TransportLimits, guarded_protocol
    except ImportError as exc:
        logger.warning(
            "the dashboard runs WITHOUT its connection guard (no head deadline, no limit on "
            "open connections): %s. Install httptools, or keep WORKER_DASHBOARD_HOST on "
            "127.0.0.1",
            exc,
        )
        return "h11"
    return guarded_protocol(
        TransportLimits(
            header_timeout=settings.dashboard_header_timeout,
            max_header_bytes=16 * 1024,
            max_headers=64,
            max_connections=settings.dashboard_max_connections,
            logger="worker.dashboard",
            connections_setting="WORKER_DASHBOARD_MAX_CONNECTIONS",
        )
    )


class DashboardServer:
    """The dashboard's lifetime: `await start()` -> URL, `await stop()` when the worker ends."""

    def __init__(self, worker: DashboardWorker, settings: WorkerSettings) -> None:
        self.worker = worker
        self.settings = settings
        self.url: str | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Listen and serve in the background; return `http://localhost:<port>`.

        Raises ConfigError when the configured port or host cannot be used.
        """
        if self._task is not None:
            raise RuntimeError("dashboard already started")
        host = self.settings.dashboard_host
        sock = bind_dashboard_socket(host, self.settings.dashboard_port)
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self.worker),
            log_config=None,  # the worker's logging setup stays as it is
            access_log=False,  # 2-second polling from every open tab would drown the job logs
            lifespan="off",
            ws="none",
            http=http_protocol(self.settings),
            limit_concurrency=32,  # a runaway client gets 503s, not the worker's memory
            timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="worker-dashboard")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            sock.close()
            error = task.exception()
            raise RuntimeError(f"the dashboard did not start: {error!r}") from error
        task.add_done_callback(_report_crash)
        self._server, self._task = server, task
        self.url = dashboard_url(host, port)
        return self.url

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (briefly), and wait for the task."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await asyncio.wait({self._task})  # never raises: a crash was logged when it happened
        self._server = self._task = None


def _report_crash(task: asyncio.Task[None]) -> None:
    """The dashboard is a convenience: if it dies the worker keeps working, but says so."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("the worker dashboard stopped: %r", task.exception())
