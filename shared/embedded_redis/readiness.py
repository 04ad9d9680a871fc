"""Waiting until a just-launched server answers, before any Redis client library is involved.

A few lines of RESP over a plain socket suffice to ask ``INFO server`` for the answering process's
id; comparing it with the child's pid keeps a foreign server that grabbed the port from passing
for ours.
"""

from __future__ import annotations

import enum
import socket
import subprocess
import time
from typing import BinaryIO

__all__ = ["ReadyOutcome", "wait_ready"]

_PROBE_TIMEOUT = 0.5


class ReadyOutcome(enum.Enum):
    READY = "ready"
    EXITED = "exited"
    TIMEOUT = "timeout"


def wait_ready(
    proc: subprocess.Popen[bytes], host: str, port: int, password: str | None, deadline: float
) -> ReadyOutcome:
    """Poll until ``proc`` itself answers on host:port, exits, or the monotonic ``deadline``."""
    delay = 0.005
    while True:
        if proc.poll() is not None:
            return ReadyOutcome.EXITED
        # Compare process ids: a foreign server that grabbed the port must not pass for ours.
        if _probe(host, port, password) == proc.pid:
            return ReadyOutcome.READY
        now = time.monotonic()
        if now >= deadline:
            return ReadyOutcome.TIMEOUT
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.1)


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
                # INFO answers while the AOF is still loading; PING gets -LOADING until the
                # data is in, and clients must not arrive before that.
                sock.sendall(_resp_command("PING"))
                _resp_read(stream)
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
