"""Serve an ASGI app on 127.0.0.1:<free port> from a background thread, for fake AI services.

A thread (with its own event loop) keeps the fake independent of the test's loop: a connector
that blocked its loop by mistake would hang against an in-loop fake but fails here instead.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import ASGIApp


class BackgroundServer:
    def __init__(self, app: ASGIApp) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            http="h11",
            # The sans-I/O implementation avoids the websockets legacy API, whose deprecation
            # warnings would turn into errors under filterwarnings=error.
            ws="websockets-sansio",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="fake-service", daemon=True)
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._server.serve()

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"fake server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start in time")
            time.sleep(0.005)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        # A fake has nothing worth a graceful shutdown; force_exit skips waiting for
        # keep-alive connections the clients under test may still hold.
        self._server.force_exit = True
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def call(self, fn: Any, *args: Any) -> None:
        """Run `fn(*args)` on the server's loop (fake state belongs to that thread)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)


class FakeService:
    """Base of the fake AI services: a BackgroundServer serving `self._app()`, used as a
    context manager. Subclasses build their state first, then call super().__init__()."""

    def __init__(self, app: ASGIApp) -> None:
        self._server = BackgroundServer(app)

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._server.stop()


def png_bytes(
    width: int = 4, height: int = 4, rgb: tuple[int, int, int] = (120, 140, 170)
) -> bytes:
    """A real, valid PNG of one colour, built without PIL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width  # filter type 0, then RGB pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
