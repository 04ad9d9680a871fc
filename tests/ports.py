"""Free TCP ports for the servers tests start, chosen below the kernel's ephemeral range.

A port the kernel hands out for `bind(0)` comes from the ephemeral range, which is also where
every outgoing connection takes its local port. Between choosing a port and the server
binding it, any of the hundreds of client connections a test run opens (or another process
on the box) may take it, and the server dies with "Address already in use" (seen in CI: a
cluster node's bus port). Below the range no outgoing connection is ever given a port, so
only another listener can collide, and `bind` checks that at choosing time.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# Linux's default ephemeral range starts at 32768; below it, leave the well-known and
# registered low ports alone.
LOWEST = 10_000
_DEFAULT_EPHEMERAL_START = 32_768
_rng = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        first = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_START


# Every port handed out in this process. A caller often chooses several before starting
# anything (a cluster's data and bus ports, say): nothing listens on the first yet when the
# next is chosen, so without this two of them could be the same port, and the second server
# would die with "Address already in use" (seen in CI: a cluster replica's port).
_given: set[int] = set()


def own_range(lowest: int, top: int) -> tuple[int, int]:
    """This test process's share of [lowest, top). The suite runs in several processes
    (pytest-xdist), and `_given` remembers only this one's ports: two processes choosing
    before either server binds could pick the same port. Each takes a slice of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return lowest, top
    index = int(worker[2:]) % count
    width = (top - lowest) // count
    return lowest + index * width, lowest + (index + 1) * width


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now and that this process has not handed out before, outside
    the ephemeral range where the system allows it (otherwise one the kernel chose), in this
    test process's own slice of that room (`own_range`)."""
    top = _ephemeral_start()
    if top - LOWEST < 1_000:  # an unusual range: no room below it
        return _kernel_port(host)
    lowest, top = own_range(LOWEST, top)
    for _ in range(100):
        port = _rng.randrange(lowest, top)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _given.add(port)
            return port
    return _kernel_port(host)


def _kernel_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
