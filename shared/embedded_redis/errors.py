"""The embedded server's error type, in a module of its own so that the binary search and the
server class can both raise it without importing each other."""

from __future__ import annotations

__all__ = ["EmbeddedRedisError"]


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found, started or reached."""
