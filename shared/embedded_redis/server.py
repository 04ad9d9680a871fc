"""A private Redis-compatible server for zero-setup use (demo hub, tests): start, answer, stop.

This module runs the process; its neighbours in the package hold the other decisions: which
binary (``binary``), what to tell it (``config``: AOF ``everysec`` by default, password on
stdin, never in ``ps``), and when it counts as up (``readiness``). Callers import from the
package, ``shared.embedded_redis``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from shared.embedded_redis.binary import find_server_binary, require_server_binary
from shared.embedded_redis.config import APPENDFSYNC_VALUES, server_args, stdin_config
from shared.embedded_redis.errors import EmbeddedRedisError
from shared.embedded_redis.readiness import ReadyOutcome, wait_ready

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "find_server_binary",
    "free_port",
]

# The package's name, which these lines have always carried; binary.py logs under it too.
logger = logging.getLogger("shared.embedded_redis")

_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 20
_PORT_IN_USE_MARKERS = ("address already in use", "failed listening on port")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (another process may take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A private Redis/Valkey server process bound to ``host``, with its files in ``data_dir``.

    >>> with EmbeddedRedis(Path("data/redis")) as server:  # doctest: +SKIP
    ...     client = redis.Redis.from_url(server.url)
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        appendonly: bool = True,
        appendfsync: str = "everysec",
        password: str | None = None,
        binary: Path | None = None,
    ) -> None:
        if appendfsync not in APPENDFSYNC_VALUES:
            raise ValueError(
                f"appendfsync must be one of {sorted(APPENDFSYNC_VALUES)}, not {appendfsync!r}"
            )
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port}")
        if password is not None and password == "":
            raise ValueError("password must be non-empty (or None for no password)")
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._requested_port = port
        self._port = port
        self._host = host
        self._appendonly = appendonly
        self._appendfsync = appendfsync
        self._password = password
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties --------------------------------------------------------------------------------

    @property
    def binary(self) -> Path:
        """The server binary this instance runs (resolved on first use)."""
        if self._binary is None:
            self._binary = require_server_binary()
        return self._binary

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._data_dir / "redis.log"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedRedisError("the server has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0`` for clients (a wildcard bind maps to loopback)."""
        auth = f":{quote(self._password, safe='')}@" if self._password is not None else ""
        host = self._client_host()
        if ":" in host:
            host = f"[{host}]"
        return f"redis://{auth}{host}:{self.port}/0"

    def _client_host(self) -> str:
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self._host, self._host)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait (up to ``timeout`` seconds) until it answers; return its URL.

        When no port was given, a free one is picked, and if another process grabs it first the
        start is retried on a new port a few times.
        """
        if self.running:
            return self.url
        binary = self.binary
        self._data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self._host)
            log_offset = self._log_size()
            proc = self._launch(binary, port)
            outcome = wait_ready(proc, self._client_host(), port, self._password, deadline)
            if outcome is ReadyOutcome.READY:
                self._proc = proc
                self._port = port
                atexit.register(self._stop_at_exit)
                logger.info(
                    "embedded redis ready: %s pid %d on %s:%d", binary, proc.pid, self._host, port
                )
                return self.url
            self._reap(proc, timeout=2.0)
            tail = self._log_tail(log_offset)
            port_taken = any(marker in tail.lower() for marker in _PORT_IN_USE_MARKERS)
            if port_taken and attempt < attempts and time.monotonic() < deadline:
                logger.warning("port %d was taken before %s bound it; retrying", port, binary.name)
                continue
            if outcome is ReadyOutcome.TIMEOUT:
                reason = f"did not answer on {self._host}:{port} within {timeout:g} s"
            else:
                reason = f"exited with code {proc.returncode} (port {port})"
            raise EmbeddedRedisError(
                f"embedded redis server {binary} {reason}; last lines of {self.log_path}:\n"
                f"{tail or '(log is empty)'}"
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the AOF), wait for it, kill it after ``timeout``.

        Calling it again, or on a server that never started, does nothing.
        """
        proc = self._proc
        if proc is None:
            return
        atexit.unregister(self._stop_at_exit)
        self._reap(proc, timeout=timeout)
        self._proc = None
        if self._requested_port is None:
            self._port = None
        logger.info("embedded redis stopped: pid %d, exit code %s", proc.pid, proc.returncode)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------------

    def _launch(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        args = server_args(
            binary,
            port=port,
            host=self._host,
            data_dir=self._data_dir,
            log_path=self.log_path,
            appendonly=self._appendonly,
            appendfsync=self._appendfsync,
            config_on_stdin=self._password is not None,
        )
        logger.info(
            "starting embedded redis: %s on %s:%d, dir %s, appendonly %s (%s)%s",
            binary,
            self._host,
            port,
            self._data_dir,
            "yes" if self._appendonly else "no",
            self._appendfsync,
            ", password set" if self._password is not None else "",
        )
        with open(self.log_path, "ab") as log:  # early errors go to stdout/stderr: keep them too
            try:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE if self._password is not None else subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self._data_dir,
                    close_fds=True,
                    # Own session: a terminal's Ctrl+C reaches the owner, which then stops the
                    # server cleanly, instead of killing the server under it.
                    start_new_session=sys.platform != "win32",
                )
            except OSError as exc:
                raise EmbeddedRedisError(f"cannot run redis server {binary}: {exc}") from exc
        if proc.stdin is not None:
            assert self._password is not None
            try:
                proc.stdin.write(stdin_config(self._password))
                proc.stdin.close()
            except OSError:  # it exited already; wait_ready reports it with the log
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        return proc

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded redis pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_tail(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])
