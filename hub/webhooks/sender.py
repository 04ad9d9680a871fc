"""One delivery attempt: a POST to the receiver, and what came of it.

The rules that make an attempt safe to make on a client's behalf are enforced here:

- **The address connected to is the address checked.** The connection pool's network
  backend resolves the host itself, refuses the whole name when any of its addresses is
  refused (hub/webhooks/targets.py), and connects to one of exactly those addresses. No
  second lookup happens between the check and the connection, so DNS rebinding cannot
  swap a public answer for a private one. TLS still verifies the certificate against the
  URL's host name.
- **No redirects.** httpcore never follows them; a 3xx answer is a failed attempt.
- **Bounded.** Each attempt has one deadline for everything (resolving, connecting, TLS,
  sending, the answer), and at most `max_response_bytes` of the answer's body is read:
  a receiver cannot hold a hub's slot or memory.
- **No environment.** httpcore reads no proxy variables and no .netrc.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore

from hub.webhooks.targets import AddressPolicy, TargetRefused, parse_address
from shared import __version__

Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = f"emp-redis-hub/{__version__} (webhooks)"
EXCERPT_BYTES = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    """`ok`: a 2xx answer. Otherwise `error` says why, `status` is the HTTP status if there
    was an answer, and `retryable` is False only when the target itself was refused."""

    ok: bool
    status: int | None = None
    error: str = ""
    retryable: bool = True
    body_bytes_read: int = 0


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, each once."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"{host} does not resolve: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that resolves, checks and connects to the checked address."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolve: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:  # all of them: a name must not mix public and private
            self._policy.check_address(host, parse_address(address))
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("refused: unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port  # Origin itself is not hashable


class Connections:
    """Kept-alive connections, a stack of idle ones per origin; each attempt has one to
    itself. httpcore's own pool re-matches every queued request against every connection
    on each change, which at 64 attempts in flight to one receiver cost more CPU than the
    attempts (about 90 deliveries/s on the 2-core dev box); a stack costs nothing."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, *, max_idle: int) -> None:
        self._backend = backend
        self._max_idle = max_idle
        self._ssl = ssl.create_default_context()
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}

    async def take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        """An idle connection to `origin`, or a new one (it connects on its first request)."""
        stack = self._idle.get(_key(origin), [])
        while stack:
            connection = stack.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            origin, ssl_context=self._ssl, keepalive_expiry=30.0, network_backend=self._backend
        )

    async def give_back(
        self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection
    ) -> None:
        """After its response was closed: kept when it can carry another request."""
        stack = self._idle.setdefault(_key(origin), [])
        if connection.is_idle() and len(stack) < self._max_idle:
            stack.append(connection)
        else:
            await connection.aclose()

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for connection in stack:
                await connection.aclose()
        self._idle.clear()


class Sender:
    """POSTs deliveries, keeping connections to receivers alive between attempts."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout: float,
        max_response_bytes: int,
        max_connections: int,
        resolve: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._connections = Connections(
            GuardedBackend(policy, resolve, inner), max_idle=max_connections
        )

    async def aclose(self) -> None:
        await self._connections.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        """One attempt; never raises for anything the receiver or the network does."""
        phase = {p: self._timeout for p in ("connect", "read", "write", "pool")}
        request_headers = [
            ("Host", urlsplit(url).netloc),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("User-Agent", USER_AGENT),
            *headers.items(),
        ]
        request = httpcore.Request(
            "POST", url, headers=request_headers, content=body, extensions={"timeout": phase}
        )
        origin = request.url.origin
        connection = await self._connections.take(origin)
        try:
            async with asyncio.timeout(self._timeout):
                response = await connection.handle_async_request(request)
                try:
                    excerpt, read = await self._read_capped(response)
                finally:
                    await response.aclose()  # idle again, or closed when left unread
        except Exception as exc:
            await connection.aclose()
            return self._failure(exc)
        except BaseException:
            await connection.aclose()
            raise
        await self._connections.give_back(origin, connection)
        status = response.status
        if 200 <= status < 300:
            return Outcome(True, status, body_bytes_read=read)
        detail = " (redirects are not followed)" if 300 <= status < 400 else ""
        text = excerpt.decode("utf-8", "replace").strip()
        error = f"HTTP {status}{detail}" + (f": {text}" if text else "")
        return Outcome(False, status, error, body_bytes_read=read)

    def _failure(self, exc: Exception) -> Outcome:
        """What an attempt that got no answer says; anything else is a bug and raises."""
        if isinstance(exc, TargetRefused | httpcore.UnsupportedProtocol):
            return Outcome(False, error=str(exc), retryable=False)
        if isinstance(exc, TimeoutError | httpcore.TimeoutException):
            return Outcome(False, error=f"no answer within {self._timeout:g} s")
        if isinstance(exc, httpcore.NetworkError | httpcore.ProtocolError | OSError):
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:300])
        raise exc

    async def _read_capped(self, response: httpcore.Response) -> tuple[bytes, int]:
        """The start of the body (for the error message) and how much was read: never more
        than `max_response_bytes` plus one network read. Leaving the rest unread closes the
        connection instead of keeping it."""
        excerpt = b""
        read = 0
        chunks = response.aiter_stream()
        try:
            async for chunk in chunks:
                if len(excerpt) < EXCERPT_BYTES:
                    excerpt += chunk[: EXCERPT_BYTES - len(excerpt)]
                read += len(chunk)
                if read >= self._max_response_bytes:
                    break
        finally:
            close = getattr(chunks, "aclose", None)  # an async generator left mid-way
            if close is not None:
                await close()
        return excerpt, read
