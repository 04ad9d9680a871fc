"""A TCP proxy on 127.0.0.1 that can partition a client from Redis on command: paused (bytes
held, delivered later) or black-holed (connections stay open but never carry another byte,
as a NAT or firewall that forgot them). Used by the chaos matrix and by the tests of the
worker's control-channel keepalive; the SDK tests put it in front of a hub, and also cut
connections outright or lose one answer."""

from __future__ import annotations

import asyncio
import contextlib
import time


class PausableProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`.

    `pause()` is a network partition without resets: nothing is forwarded in either
    direction and connections stay open (bytes wait in the proxy and the kernel buffers,
    new connections are accepted and held); `resume()` delivers everything that waited, in
    order. `blackhole()` silently kills the connections open right now, as a NAT or
    firewall that forgets them does: they stay open but never carry another byte either
    way, while new connections flow normally."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0  # connections of an older generation are black-holed
        self._dead_below = 0
        self._lose_reply = False
        self.port = 0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    async def start(self) -> PausableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def pause(self) -> float:
        self._flowing.clear()
        return time.time()

    def resume(self) -> float:
        self._flowing.set()
        return time.time()

    def blackhole(self) -> float:
        self._generation += 1
        self._dead_below = self._generation
        return time.time()

    def cut(self) -> None:
        """Close every connection open right now, both ends, as a restarted router does;
        new connections flow as usual (or wait, while paused)."""
        for task in list(self._tasks):
            task.cancel()

    def lose_next_reply(self) -> None:
        """Deliver the next request, then close its connection where the answer should
        come: the client cannot tell whether the server acted on the request."""
        self._lose_reply = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        generation = self._generation
        try:
            await self._flowing.wait()  # a connection opened during a pause is held
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            try:
                pipes = {
                    asyncio.create_task(self._pipe(client_r, up_w, generation)),
                    asyncio.create_task(self._pipe(up_r, client_w, generation, reply=True)),
                }
                try:
                    await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pipe in pipes:
                        pipe.cancel()
                    await asyncio.gather(*pipes, return_exceptions=True)
            finally:
                await _close(up_w)
        finally:
            await _close(client_w)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        generation: int,
        *,
        reply: bool = False,
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(65536)
                await self._flowing.wait()  # held while paused, EOF included
                if generation < self._dead_below:
                    await asyncio.Future()  # black-holed: swallow everything, forever
                if not data:
                    return
                if reply and self._lose_reply:
                    self._lose_reply = False
                    return  # the answer is dropped and the connection closed
                writer.write(data)
                await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close and wait for it: a transport still closing when the test's loop ends leaks its
    socket into the next test as a ResourceWarning."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)
