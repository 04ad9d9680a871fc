"""Hostile clients on a real socket: huge and endless headers, stalled and trickling clients,
too many connections, bytes the HTTP parser must refuse, path tricks around the public
prefixes, and WebSocket auth.

The hub runs in this process under uvicorn with the production server configuration
(`hub.cli._config`: the guarded httptools protocol of shared/http_guard.py, no server header,
ws_max_size = MAX_REQUEST_BYTES), on port 0. Requests are written byte for byte on raw
sockets where a client library would have refused or normalised them (dot segments, invalid
UTF-8, conflicting lengths). Every test is bounded: a read waits a few seconds at most, and
stalled connections are closed by the test before the server stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from starlette.routing import WebSocketRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hub.app import create_app
from hub.cli import HubServer, _config
from hub.settings import HubSettings
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import (
    CLIENT_TOKEN,
    OPERATOR,
    OPERATOR_TOKEN,
    hub_settings,
    recv_json,
    ws_connect,
)

REQUEST_LIMIT = 64 * 1024
AUTH = f"Authorization: Bearer {OPERATOR_TOKEN}\r\n".encode()
JOB = orjson.dumps({"service_type": "comfyui", "payload": {"prompt": "a cat"}})
READ_TIMEOUT = 3.0
# The deadline tests set 1 s head/body deadlines: there the deadline is the feature, so the
# hub must act on it, and they wait up to ten times that for it to. The bound only has to
# tell "closed at its deadline" from "held until the client gives up"; a loaded 2-core box
# delays a 1 s timer by milliseconds, not by 9 s.
DEADLINE = 1.0
CLOSE_BOUND = 10 * DEADLINE


@dataclasses.dataclass
class Hub:
    app: Any
    port: int
    server: HubServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=5)


@contextlib.asynccontextmanager
async def production_hub(settings: HubSettings) -> AsyncIterator[Hub]:
    """The hub as `emp-hub` serves it, on 127.0.0.1 and a free port."""
    settings = dataclasses.replace(settings, host="127.0.0.1")
    app = create_app(settings)
    server = HubServer(_config(settings, app, 0, "on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), timeout=10)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Hub(app, port, server)
    finally:
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.begin_shutdown()
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
def settings(redis_url: str) -> HubSettings:
    return hub_settings(redis_url, BrokerSettings(), max_request_bytes=REQUEST_LIMIT)


@pytest.fixture
async def hub(settings: HubSettings) -> AsyncIterator[Hub]:
    async with production_hub(settings) as running:
        yield running


# -- raw sockets --------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    status: int | None  # None: the server closed without answering
    raw: bytes
    closed: bool  # the server closed the connection after answering (or instead)

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw.split(b"\r\n\r\n", 1)[1])


async def read_answer(reader: asyncio.StreamReader, timeout: float = READ_TIMEOUT) -> Answer:
    """One response (by Content-Length) and whether the connection then closed."""
    data = b""
    closed = False
    try:
        async with asyncio.timeout(timeout):
            while b"\r\n\r\n" not in data:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while not closed and len(rest) < length:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                rest += chunk
            data = head + b"\r\n\r\n" + rest
            if not closed and b"connection: close" in head.lower():
                closed = await reader.read(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return Answer(status, data, closed)


async def exchange(hub: Hub, data: bytes, timeout: float = READ_TIMEOUT) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader, timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def post(
    path: str, body: bytes, *extra: bytes, length: int | None = None, auth: bytes = AUTH
) -> bytes:
    """A raw POST with the operator's token (or `auth`: a whole header line, or b"")."""
    size = len(body) if length is None else length
    head = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: hub",
        b"Content-Type: application/json",
        f"Content-Length: {size}".encode(),
        *([auth.rstrip()] if auth else []),
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def footprint(redis: Redis) -> tuple[int, int]:
    return int(await redis.dbsize()), int(await redis.zcard("jobs:pending"))


async def still_serving(hub: Hub) -> None:
    """The hub answers a new request (the client's 5 s timeout only ends a wait for a hub
    that no longer answers; how fast it answers is not the point)."""
    async with hub.client() as http:
        assert (await http.get("/health")).status_code == 200


# -- huge headers -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024], ids=["100KB", "1MB"])
async def test_a_huge_authorization_header_is_a_clean_refusal(
    hub: Hub, redis: Redis, size: int
) -> None:
    """401 (no such token), 431/400 (too large) or a close: never a 5xx or a hang."""
    before = await footprint(redis)
    token = b"Bearer " + b"t" * size
    answer = await exchange(hub, post("/jobs", JOB, auth=b"Authorization: " + token))
    assert answer.status in (None, 400, 401, 413, 431), answer.raw[:200]
    assert answer.status is not None or answer.closed
    assert token not in answer.raw
    assert await footprint(redis) == before
    await still_serving(hub)


async def test_an_endless_header_is_cut_off(hub: Hub) -> None:
    """A header that never ends, sent 64 KB at a time: the hub answers 431 (naming the
    headers) and hangs up after the first reads past HUB_MAX_HEADER_BYTES, long before the
    8 MB the client would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    answered = asyncio.create_task(read_answer(reader, timeout=30))
    chunk = b"x" * 65536
    sent = 0
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Endless: ")
        for _ in range(128):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered), 0.01)
            if answered.done():
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        answer = await answered
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert sent < 2 * 1024 * 1024, f"the hub took {sent} bytes of one header"
    assert answer.status in (None, 431), answer.raw[:200]
    assert answer.closed
    await still_serving(hub)


async def test_a_too_large_head_is_refused_with_431(hub: Hub, redis: Redis) -> None:
    before = await footprint(redis)
    answer = await exchange(hub, post("/jobs", JOB, b"X-Big: " + b"y" * (80 * 1024)))
    assert answer.status == 431, answer.raw[:200]
    assert answer.body["error"]["field"] == "headers"
    assert answer.closed
    assert await footprint(redis) == before


async def test_too_many_header_lines_are_refused_with_431(hub: Hub, redis: Redis) -> None:
    before = await footprint(redis)
    lines = [f"X-H{i}: v".encode() for i in range(300)]
    answer = await exchange(hub, post("/jobs", JOB, *lines))
    assert answer.status == 431, answer.raw[:200]
    assert answer.body["error"]["field"] == "headers"
    assert await footprint(redis) == before


async def test_a_large_but_allowed_head_is_served(hub: Hub) -> None:
    """The cap leaves room for real clients: 40 KB of cookies and 200 header lines pass."""
    lines = [f"X-H{i}: v".encode() for i in range(200)]
    answer = await exchange(hub, post("/jobs", JOB, b"Cookie: c=" + b"z" * (40 * 1024), *lines))
    assert answer.status == 201, answer.raw[:300]


# -- slow clients -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stalled_connections(hub: Hub, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """`count` connections of each kind that stop sending: nothing at all, half a request
    head, a whole head and half of the declared (authenticated) body."""
    openings = [
        b"",
        b"POST /jobs HTTP/1.1\r\nHost: hub\r\n",
        post("/jobs", JOB[:10], length=len(JOB)),
    ]
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(count):
            for opening in openings:
                reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
                writer.write(opening)
                await writer.drain()
                streams.append((reader, writer))
        yield [reader for reader, _ in streams]
    finally:
        for _, writer in streams:
            writer.close()
        for _, writer in streams:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def trickle(hub: Hub, stop: asyncio.Event) -> None:
    """A client that sends its body one byte every 50 ms, forever."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        writer.write(post("/jobs", b"", length=10_000))
        while not stop.is_set():
            writer.write(b" ")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_slow_clients_do_not_hold_up_anyone_else(settings: HubSettings, redis: Redis) -> None:
    """90 stalled connections and a trickling one: health, submit and read are served while
    every one of them is still open, and nothing the stalled clients started was written.

    Checked by order, not speed: the head and body deadlines are five minutes here, so the
    stalled clients stay connected for the whole test, and each request must be answered
    while the hub still holds all of them (a hub that served others only once it was rid of
    the stalled ones would leave the client waiting until its own 5 s timeout)."""
    patient = dataclasses.replace(settings, header_timeout_seconds=300, body_timeout_seconds=300)
    stop = asyncio.Event()
    async with production_hub(patient) as hub:
        trickler = asyncio.create_task(trickle(hub, stop))
        try:
            async with stalled_connections(hub, 30) as stalled, hub.client() as http:
                for _ in range(3):
                    assert (await http.get("/health")).status_code == 200
                    created = await http.post(
                        "/jobs",
                        content=JOB,
                        headers={**OPERATOR, "Content-Type": "application/json"},
                    )
                    assert created.status_code == 201, created.text
                    got = await http.get(f"/jobs/{created.json()['id']}", headers=OPERATOR)
                    assert got.status_code == 200
                    # Answered with every slow client still connected and still trickling.
                    assert len(hub.server.server_state.connections) > len(stalled)
                    assert not trickler.done()
                assert await redis.zcard("jobs:pending") == 3
        finally:
            stop.set()
            await asyncio.wait_for(trickler, 5)
        await still_serving(hub)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    """Whether the server ends the connection within `seconds`, and what it sent first."""
    data = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65536):
                data += chunk
        return True, data
    except TimeoutError:
        return False, data
    except ConnectionResetError:
        return True, data


async def test_stalled_connections_are_closed(settings: HubSettings) -> None:
    """HUB_HEADER_TIMEOUT_SECONDS / HUB_BODY_TIMEOUT_SECONDS (1 s here): a connection that
    sends nothing is closed without a word, half a head gets 408 naming the request, half a
    body 408 naming the body."""
    quick = dataclasses.replace(
        settings, header_timeout_seconds=DEADLINE, body_timeout_seconds=DEADLINE
    )
    async with production_hub(quick) as hub, stalled_connections(hub, 1) as readers:
        results = await asyncio.gather(*(closed_within(r, CLOSE_BOUND) for r in readers))
    (idle, idle_sent), (half_head, head_sent), (half_body, body_sent) = results
    assert (idle, half_head, half_body) == (True, True, True), results
    assert idle_sent == b""
    assert head_sent.startswith(b"HTTP/1.1 408"), head_sent
    assert orjson.loads(head_sent.split(b"\r\n\r\n", 1)[1])["error"]["field"] == "request"
    assert body_sent.startswith(b"HTTP/1.1 408"), body_sent
    assert orjson.loads(body_sent.split(b"\r\n\r\n", 1)[1])["error"]["field"] == "body"


async def trickle_until_closed(hub: Hub, opening: bytes, seconds: float) -> tuple[bool, bytes]:
    """Send `opening`, then one more byte every 50 ms until the hub ends the connection (or
    `seconds` pass): whether it did, and what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    ended = asyncio.create_task(closed_within(reader, seconds))
    try:
        writer.write(opening)
        while not ended.done():
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                writer.write(b" ")
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), 0.05)
        return await ended
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_trickled_head_is_cut_off_at_the_deadline(settings: HubSettings) -> None:
    """The head deadline counts from the first byte, not from the last: a client that sends
    one header byte every 50 ms never completes its head and is answered 408."""
    quick = dataclasses.replace(settings, header_timeout_seconds=DEADLINE)
    opening = b"GET /health HTTP/1.1\r\nX-Slow: s"
    async with production_hub(quick) as hub:
        closed, sent = await trickle_until_closed(hub, opening, CLOSE_BOUND)
    assert closed
    assert sent.startswith(b"HTTP/1.1 408"), sent


async def test_a_body_trickled_to_a_route_that_ignores_it_is_cut_off(
    settings: HubSettings,
) -> None:
    """GET /health answers without reading a body; the rest of a 10,000-byte body sent one
    byte at a time is discarded for at most the head timeout, then the connection ends."""
    quick = dataclasses.replace(settings, header_timeout_seconds=DEADLINE)
    opening = b"GET /health HTTP/1.1\r\nHost: hub\r\nContent-Length: 10000\r\n\r\n"
    async with production_hub(quick) as hub:
        closed, sent = await trickle_until_closed(hub, opening, CLOSE_BOUND)
    assert closed
    assert sent.startswith(b"HTTP/1.1 200"), sent


async def test_an_idle_kept_alive_connection_is_not_cut_by_the_head_deadline(
    settings: HubSettings,
) -> None:
    """Between requests only the keep-alive timeout (5 s) applies: a pause longer than the
    head deadline (1 s here) on one connection, then a second request, is served."""
    quick = dataclasses.replace(settings, header_timeout_seconds=1)
    request = b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n"
    async with production_hub(quick) as hub:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            for _ in range(2):
                writer.write(request)
                await writer.drain()
                answer = await read_answer(reader)
                assert answer.status == 200, answer.raw[:200]
                assert not answer.closed
                await asyncio.sleep(1.5)  # the scenario is the pause itself
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_connections_past_the_limit_get_503(settings: HubSettings) -> None:
    """HUB_MAX_CONNECTIONS=4: with four connections open, a fifth is answered 503 naming the
    connection and closed; once they go, the hub serves again."""
    capped = dataclasses.replace(settings, max_connections=4)
    async with production_hub(capped) as hub:
        held = [await asyncio.open_connection("127.0.0.1", hub.port) for _ in range(4)]
        try:
            answer = await exchange(hub, b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n")
            assert answer.status == 503, answer.raw[:200]
            assert answer.body["error"]["field"] == "connection"
            assert answer.closed
        finally:
            for _, writer in held:
                writer.close()
            for _, writer in held:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        async def serving() -> bool:
            answer = await exchange(hub, b"GET /health HTTP/1.1\r\nHost: hub\r\n\r\n")
            return answer.status == 200

        await wait_until(serving, message="the hub serving again after the held connections")


async def test_a_client_gone_mid_body_writes_nothing(
    hub: Hub, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a submission, then the client hangs up: nothing written, the hub serves on."""
    caplog.set_level(logging.INFO)
    before = await footprint(redis)
    _reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(post("/jobs", JOB[:10], length=len(JOB)))
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    def access_logged() -> bool:
        return any(
            r.name == "hub.access" and getattr(r, "path", "") == "/jobs" for r in caplog.records
        )

    await wait_until(access_logged, message="the access line of the abandoned request")
    assert await footprint(redis) == before
    await still_serving(hub)


async def test_a_client_gone_mid_body_is_not_an_error(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(post("/jobs", JOB[:10], length=len(JOB)))
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    def access() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "hub.access" and getattr(r, "path", "") == "/jobs"
        ]

    await wait_until(access, message="the access line of the abandoned request")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert getattr(access()[0], "status", None) != 500


# -- bytes the HTTP layer must refuse -----------------------------------------------------------


SMUGGLING = {
    "content-length and chunked": post(
        "/jobs", b"0\r\n\r\n", b"Transfer-Encoding: chunked", length=5
    ),
    "two content-lengths": post("/jobs", JOB, f"Content-Length: {len(JOB) + 5}".encode()),
    "negative content-length": post("/jobs", JOB, length=-1),
    "content-length not a number": post("/jobs", JOB).replace(
        f"Content-Length: {len(JOB)}".encode(), b"Content-Length: 1e3"
    ),
    "bad chunk size": post("/jobs", b"zz\r\n" + JOB + b"\r\n0\r\n\r\n").replace(
        f"Content-Length: {len(JOB) + 11}".encode(), b"Transfer-Encoding: chunked"
    ),
    "obsolete line folding": post("/jobs", JOB, b"X-Folded: a\r\n b"),
    "space before colon": post("/jobs", JOB, b"Content-Length : 5"),
    "nul in a header": post("/jobs", JOB, b"X-Nul: a\x00b"),
    "bare LF line endings": post("/jobs", JOB).replace(b"\r\n", b"\n"),
    "invalid UTF-8 in the path": b"GET /jobs/\xff\xfe HTTP/1.1\r\nHost: hub\r\n" + AUTH + b"\r\n",
    "invalid UTF-8 in the query": b"GET /jobs?status=\xff HTTP/1.1\r\nHost: hub\r\n"
    + AUTH
    + b"\r\n",
    "TLS handshake on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + b"\x00" * 64,
}


async def test_the_http_parser_refuses_ambiguous_requests(hub: Hub, redis: Redis) -> None:
    """Each: 400 and a closed connection (or a close alone), never a job, never a 5xx."""
    before = await footprint(redis)
    wrong = {}
    for case, data in SMUGGLING.items():
        answer = await exchange(hub, data)
        if answer.status not in (None, 400) or not answer.closed:
            wrong[case] = (answer.status, answer.closed, answer.raw[:200])
    assert wrong == {}
    assert await footprint(redis) == before
    await still_serving(hub)


async def test_invalid_utf8_in_headers_and_body(hub: Hub, redis: Redis) -> None:
    before = await footprint(redis)
    # A header value is Latin-1 to HTTP: a token made of such bytes is just a wrong token.
    wrong = await exchange(hub, post("/jobs", JOB, auth=b"Authorization: Bearer \xff\xfe\xc0\xaf"))
    assert wrong.status == 401
    assert wrong.body["error"]["field"] == "Authorization"
    # ... and an X-Request-ID of such bytes is replaced, not echoed.
    rid = await exchange(
        hub, b"GET /health HTTP/1.1\r\nHost: hub\r\nX-Request-ID: \xff\xfe\r\n\r\n"
    )
    assert rid.status == 200
    assert b"\xff" not in rid.raw
    for bad in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"):
        body = b'{"service_type":"comfyui","payload":{"p":"' + bad + b'"}}'
        answer = await exchange(hub, post("/jobs", body))
        assert answer.status == 400, answer.raw[:300]
        assert answer.body["error"]["field"] == "body"
    assert await footprint(redis) == before


async def test_a_declared_huge_body_is_refused_at_once(hub: Hub, redis: Redis) -> None:
    """413 on the Content-Length alone, before the body is sent: the client sends one byte of
    the 100 GiB it declares and then waits, so any answer at all was decided on the header
    (a hub waiting for the body would answer 408, and only after HUB_BODY_TIMEOUT_SECONDS)."""
    before = await footprint(redis)
    answer = await exchange(hub, post("/jobs", b"{", length=100 * 1024**3))
    assert answer.status == 413, answer.raw[:300]
    assert answer.body["error"]["field"] == "body"
    assert await footprint(redis) == before
    await still_serving(hub)


async def test_an_oversized_body_on_the_wire_is_413(hub: Hub, redis: Redis) -> None:
    """The whole oversized body sent (chunked, no Content-Length): 413 once the limit is
    crossed, and the hub serves on."""
    before = await footprint(redis)
    body = b'{"service_type":"comfyui","payload":{"p":"' + b"x" * (2 * REQUEST_LIMIT) + b'"}}'
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096])
        for i in range(0, len(body), 4096)
    )
    head = post("/jobs", b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    answer = await exchange(hub, head + chunked + b"0\r\n\r\n")
    assert answer.status == 413, answer.raw[:300]
    assert await footprint(redis) == before
    await still_serving(hub)


def send_all_then_read_answer(port: int, data: bytes) -> bytes:
    """What urllib does: send the whole request, body included, with no `Expect:
    100-continue`, and only then read the answer (head and Content-Length body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("connection", [b"Connection: close", b"Connection: keep-alive"])
async def test_a_client_that_sends_a_whole_oversized_body_reads_the_413(
    hub: Hub, redis: Redis, connection: bytes
) -> None:
    """The hub answers 413 as soon as the Content-Length is over the limit, before the body
    has arrived. A client that sends its body anyway must still read that answer: the hub
    reads and discards the body it refused (a lingering close) instead of closing a socket
    with unread data, which the kernel turns into a reset before the client reads."""
    before = await footprint(redis)
    body = b"x" * (12 * 1024 * 1024)
    request = post("/jobs", body, connection)
    answer = await asyncio.to_thread(send_all_then_read_answer, hub.port, request)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["error"]["field"] == "body"
    assert await footprint(redis) == before
    await still_serving(hub)


# -- paths around the public prefixes -----------------------------------------------------------

PATH_TRICKS = [
    "/jobs/../stats",
    "/ui/../stats",
    "/ui/..%2Fstats",
    "/ui/%2e%2e/stats",
    "/static/../stats",
    "/static/..%2F..%2Fhub%2Fsettings.py",
    "/static/%2e%2e/%2e%2e/hub/settings.py",
    "/health/../stats",
    "/openapi.json/../workers",
    "//stats",
    "/stats/",
    "/STATS",
    "/stats;.css",
    "/stats%00",
    "/./stats",
    "/ws/client/x/../../../stats",
    "/dashboard/data/",
    "/favicon.ico/../dashboard/data",
]


async def test_path_tricks_do_not_reach_protected_data(hub: Hub) -> None:
    """Without a token, no spelling of a protected path answers with its data: the auth check
    and the router see the same, un-normalised path."""
    wrong = {}
    for path in PATH_TRICKS:
        answer = await exchange(hub, f"GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n".encode())
        body = answer.raw.split(b"\r\n\r\n", 1)[-1]
        leaked = [s for s in (b"workers", b"pending", b"HUB_", b"OPERATOR") if s in body]
        if answer.status not in (400, 401, 404) or leaked:
            wrong[path] = (answer.status, leaked, answer.raw[:200])
    assert wrong == {}


async def test_dot_segments_reach_no_job(hub: Hub, redis: Redis) -> None:
    before = await footprint(redis)
    for path in ("/jobs/..", "/jobs/.", "/jobs/../jobs", "/jobs/%2e%2e/cancel"):
        for method in ("GET", "POST"):
            answer = await exchange(
                hub,
                f"{method} {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: 0\r\n".encode()
                + AUTH
                + b"\r\n",
            )
            assert answer.status in (404, 405), (method, path, answer.raw[:300])
    assert await footprint(redis) == before


# -- WebSockets ---------------------------------------------------------------------------------

MODERN, LEGACY_CLIENT, LEGACY_MONITOR = "/ws", "/ws/client/{conn_id}", "/ws/monitor/{conn_id}"
GATEWAY = "/gateway/worker"
KNOWN_SOCKETS = {MODERN, LEGACY_CLIENT, LEGACY_MONITOR, GATEWAY}

WS_CREDENTIALS = {
    "none": ("", {}),
    "empty query token": ("?token=", {}),
    "wrong query token": ("?token=wrong-token-12345", {}),
    "operator token prefix": (f"?token={OPERATOR_TOKEN[:-1]}", {}),
    "wrong bearer header": ("", {"Authorization": "Bearer wrong-token-12345"}),
    "basic scheme": ("", {"Authorization": f"Basic {OPERATOR_TOKEN}"}),
    "token in a cookie": ("", {"Cookie": f"token={OPERATOR_TOKEN}"}),
}


def socket_paths(app: Any) -> list[str]:
    return sorted(r.path for r in app.routes if isinstance(r, WebSocketRoute))


def test_every_websocket_endpoint_is_known(settings: HubSettings) -> None:
    """A new socket must be added to the matrix below (and to KNOWN_SOCKETS)."""
    assert set(socket_paths(create_app(settings))) == KNOWN_SOCKETS


async def connect_refused(url: str, headers: dict[str, str]) -> tuple[int | None, list[Any]]:
    """Connect and read until the server closes: (close code or handshake status, messages)."""
    messages: list[Any] = []
    try:
        async with ws_connect_headers(url, headers) as ws:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    async for message in ws:
                        messages.append(orjson.loads(message))
                        # A refused socket must not run anything it is sent.
                        with contextlib.suppress(ConnectionClosed):
                            await ws.send(
                                orjson.dumps(
                                    {"type": "submit_job", "job_type": "comfyui", "payload": {}}
                                ).decode()
                            )
            except ConnectionClosed:
                pass
            return ws.close_code, messages
    except InvalidStatus as exc:
        return exc.response.status_code, messages


@contextlib.asynccontextmanager
async def ws_connect_headers(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    if not headers:
        async with ws_connect(url) as ws:
            yield ws
        return
    from websockets.asyncio.client import connect

    async with connect(url, open_timeout=5, close_timeout=2, additional_headers=headers) as ws:
        yield ws


@pytest.mark.parametrize("credential", WS_CREDENTIALS, ids=WS_CREDENTIALS.keys())
async def test_websockets_refuse_bad_credentials(hub: Hub, redis: Redis, credential: str) -> None:
    """/ws and the worker gateway: refused at the handshake (403). The original protocol's
    sockets accept, say `Authentication failed` once, close with 1008, and act on nothing
    sent meanwhile."""
    query, headers = WS_CREDENTIALS[credential]
    before = await footprint(redis)
    for path in socket_paths(hub.app):
        url = hub.ws_url + path.replace("{conn_id}", "c1") + query
        code, messages = await connect_refused(url, headers)
        if path in (MODERN, GATEWAY):
            assert (code, messages) == (403, []), (path, code, messages)
        else:
            assert code == 1008, (path, code, messages)
            assert len(messages) == 1, messages
            assert messages[0]["type"] == "error"
            assert messages[0]["error"].startswith("Authentication failed"), messages
    assert await footprint(redis) == before


async def test_a_client_token_is_refused_on_the_monitor_socket(hub: Hub, redis: Redis) -> None:
    before = await footprint(redis)
    code, messages = await connect_refused(f"{hub.ws_url}/ws/monitor/m1?token={CLIENT_TOKEN}", {})
    assert code == 1008
    assert [m["type"] for m in messages] == ["error"]
    assert "monitors need the operator token" in messages[0]["error"]
    assert await footprint(redis) == before


async def test_a_legacy_socket_refuses_a_hostile_connection_id(hub: Hub) -> None:
    for conn_id in ("a%7Bb%7D", "%2e%2e", "x" * 200, "a%20b"):
        code, messages = await connect_refused(
            f"{hub.ws_url}/ws/client/{conn_id}?token={CLIENT_TOKEN}", {}
        )
        assert code == 1008, conn_id
        assert messages[0]["error"] == "Authentication failed: invalid connection id"


async def test_websocket_bad_input(hub: Hub, redis: Redis) -> None:
    """Deep nesting, binary garbage and non-objects get an error message and the socket
    stays usable; a message over ws_max_size closes the socket with 1009."""
    before = await footprint(redis)
    async with ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ws:
        assert (await recv_json(ws))["type"] == "welcome"
        for bad in (
            "[" * 10_000 + "]" * 10_000,
            '{"type": "subscribe", "job_id": ' + "[" * 5000,
            "null",
            "42",
            '"x"',
        ):
            await ws.send(bad)
            assert (await recv_json(ws))["type"] == "error"
        await ws.send(b"\xff\xfe\x00garbage")
        assert (await recv_json(ws))["type"] == "error"
        await ws.send('{"type": "ping"}')
        assert (await recv_json(ws)) == {"type": "pong"}
    async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as legacy:
        assert (await recv_json(legacy))["type"] == "connection_established"
        nested = (
            '{"type": "submit_job", "job_type": "comfyui", "payload": '
            + "[" * 10_000
            + "]" * 10_000
            + "}"
        )
        await legacy.send(nested)
        assert (await recv_json(legacy))["type"] == "error"
        deep_payload = {
            "type": "submit_job",
            "job_type": "comfyui",
            "payload": orjson.dumps(nest(100)).decode(),
        }
        await legacy.send(orjson.dumps(deep_payload).decode())
        assert (await recv_json(legacy))["type"] == "error"
    assert await footprint(redis) == before
    async with ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ws:
        await recv_json(ws)
        await ws.send("x" * (REQUEST_LIMIT + 1))
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1009
    await still_serving(hub)


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


async def raw_websocket(hub: Hub, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-made handshake, for frames a WebSocket library will not send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    return header + mask + masked


async def read_close_code(reader: asyncio.StreamReader) -> int | None:
    """Skip data frames; the close frame's code, or None if the connection just ended."""
    async with asyncio.timeout(READ_TIMEOUT):
        while True:
            head = await reader.read(2)
            if len(head) < 2:
                return None
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(size)
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


@pytest.mark.parametrize(
    "path", [f"/ws?token={OPERATOR_TOKEN}", f"/ws/client/c1?token={CLIENT_TOKEN}"]
)
async def test_an_invalid_utf8_text_frame_closes_the_socket_with_1007(hub: Hub, path: str) -> None:
    reader, writer = await raw_websocket(hub, path)
    try:
        writer.write(frame(0x1, b'{"type": "ping", "x": "\xff\xfe"}'))
        await writer.drain()
        assert await read_close_code(reader) == 1007
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    await still_serving(hub)
