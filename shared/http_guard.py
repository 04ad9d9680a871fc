"""HTTP/1.1 connections for the hub and the worker dashboard: uvicorn's httptools protocol
plus the limits it lacks.

It lives in shared/ because both servers need it (hub -> shared <- worker); it needs
uvicorn and httptools, which worker.pyz ships for this reason. Import it only where a
server starts: worker/dashboard/server.py degrades, with a warning, when httptools is
missing.

uvicorn bounds neither the size of a request head nor the time a client may take to send
it: a connection that sends nothing, half a head, or a header line that never ends is held
(and buffered) for as long as the client likes, and a few thousand of them exhaust the
hub's file descriptors or memory (slowloris). `GuardedHttpToolsProtocol` adds, per
connection:

- a head deadline: the whole request head must arrive within `header_timeout` seconds of
  the connection opening or of the request's first byte after a keep-alive pause. A client
  that sent part of a head gets 408; one that sent nothing is closed silently, as browsers
  leave pre-opened sockets unused and a keep-alive close is what they expect;
- a head size cap: past `max_header_bytes` bytes or `max_headers` header lines, 431 and
  close, at most one socket read after the cap;
- a connection cap: past `max_connections` open connections on the port (WebSocket ones
  included), a new one gets 503 and is closed at once;
- a lingering close: when the app has answered without reading the whole body (a 413 on the
  Content-Length, say), the rest is read and discarded for at most `header_timeout` seconds,
  and only then is the connection closed. Closing a socket with unread data makes the kernel
  send a reset, which a client still sending its body (urllib does not wait for
  `100-continue`) sees before it can read the answer. On a `Connection: close` request the
  hub sends its answer, half-closes, and discards until the client closes or the deadline
  passes; a body trickled to a route that never reads it cannot hold the socket either.

Bodies that hub routes do read are bounded by `hub.http_helpers.read_body` (size and deadline),
which answers in the API's JSON error shape. Refusals here use that shape too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, ClassVar, cast

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


def error_body(field: str, message: str) -> dict[str, Any]:
    """The project-wide error shape (hub/errors.py, worker/dashboard/http_helpers.py)."""
    return {"error": {"field": field, "message": message}}


@dataclasses.dataclass(frozen=True, slots=True)
class TransportLimits:
    """`logger` and `connections_setting` say whose server it is in the log lines: the hub's
    (as they always read) or the worker dashboard's."""

    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 256
    max_connections: int = 2048
    logger: str = "hub.transport"
    connections_setting: str = "HUB_MAX_CONNECTIONS"


def guarded_protocol(limits: TransportLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class bound to `limits`: uvicorn instantiates the class it is given, so the
    limits travel as a class attribute of a subclass made for this configuration."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it in a parser error,
    which uvicorn answers through `send_400_response`."""


class _CloseAfterBody:
    """The transport as uvicorn's request cycle sees it. The cycle closes the connection as
    soon as a `Connection: close` response is sent; while that request's body is still
    arriving, the protocol turns the close into a lingering one."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_after_body()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[TransportLimits] = TransportLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log = logging.getLogger(self.limits.logger)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind = ""
        self._message_begun = False  # a byte of the current request has been parsed
        self._head_pending = True  # its head is not complete yet
        self._body_pending = False  # its head is complete, its body is not
        self._heads_completed = 0
        self._head_bytes = 0  # raw bytes of reads that ended inside the head
        self._head_size = 0  # target and header lines parsed so far
        self._header_count = 0
        self._head_too_large = False
        self._refused = False
        self._lingering = False  # answered and half-closed: the rest of the body is discarded

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._log.warning(
                "refused a connection: %d open, the limit is %d (%s)",
                len(self.connections) - 1,
                self.limits.max_connections,
                self.limits.connections_setting,
            )
            self._refuse(503, "connection", "the server has too many open connections; retry")
            return
        self._set_deadline("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self._lingering:
            return
        heads_before = self._heads_completed
        head_pending = self._head_pending
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if head_pending and self._head_pending and self._heads_completed == heads_before:
            # The whole read belonged to a head that is still incomplete.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_head_too_large()

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_begun = True
        if self._deadline is None:
            self._set_deadline("head")

    def on_url(self, url: bytes) -> None:
        self._grow_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Counts a head that arrived in one read, which the raw count never sees."""
        self._header_count += 1
        self._grow_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if (
            self._head_size > self.limits.max_header_bytes
            or self._header_count > self.limits.max_headers
        ):
            self._head_too_large = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._clear_deadline()
        self._head_pending = False
        self._body_pending = True
        self._heads_completed += 1
        self._head_bytes = 0
        self._head_size = 0
        self._header_count = 0
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = cast(asyncio.Transport, _CloseAfterBody(self.transport, self))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._deadline_kind == "linger":
            self._clear_deadline()
        self._message_begun = False
        self._head_pending = True
        self._body_pending = False

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is how a callback stops the parser."""
        if self._head_too_large:
            self._refuse_head_too_large()
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        if self._body_pending and not self.transport.is_closing():
            self._set_deadline("linger")
        super().on_response_complete()

    def close_after_body(self) -> None:
        """Close now, or, while the request's body is still arriving, linger: half-close so
        the client sees the end of the answer, discard what it still sends, and close when
        it closes (uvicorn's `eof_received` lets the transport close itself) or at the
        deadline."""
        if not self._body_pending or self.transport.is_closing():
            self.transport.close()
            return
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._set_deadline("linger")

    # -- deadlines and refusals ---------------------------------------------------------------

    def _set_deadline(self, kind: str) -> None:
        self._clear_deadline()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._deadline_passed)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._deadline_kind = ""

    def _deadline_passed(self) -> None:
        kind = self._deadline_kind
        self._deadline = None
        self._deadline_kind = ""
        if self.transport.is_closing():
            return
        if kind == "head" and self._message_begun:
            self._log.info(
                "closed a connection whose request head did not arrive within %g s",
                self.limits.header_timeout,
                extra={"client": self._client_host()},
            )
            self._refuse(
                408,
                "request",
                f"the request head did not arrive within {self.limits.header_timeout:g} s",
            )
            return
        self.transport.close()

    def _refuse_head_too_large(self) -> None:
        self._log.info(
            "refused a request head over %d bytes or %d header lines",
            self.limits.max_header_bytes,
            self.limits.max_headers,
            extra={"client": self._client_host()},
        )
        self._refuse(
            431,
            "headers",
            f"the request head is over {self.limits.max_header_bytes} bytes "
            f"or {self.limits.max_headers} header lines",
        )

    def _refuse(self, status: int, field: str, message: str) -> None:
        """Answer `status` with the API's error body and close; nothing more is read."""
        self._refused = True
        self._clear_deadline()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's answer is still due: an answer now would be out of order.
            self.transport.close()
            return
        body = orjson.dumps(error_body(field, message))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"cache-control: no-store\r\n",
            b"content-length: ",
            str(len(body)).encode("ascii"),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _client_host(self) -> str:
        return self.client[0] if self.client else ""
