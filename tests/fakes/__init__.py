"""Fakes of the AI services the connectors drive, served over real HTTP/WebSocket sockets."""

from tests.fakes.server import BackgroundServer, png_bytes

__all__ = ["BackgroundServer", "png_bytes"]
