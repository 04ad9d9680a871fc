"""What shared/http_guard.py takes from uvicorn's private httptools protocol.

`GuardedHttpToolsProtocol` subclasses `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`,
which is not public API: a uvicorn release may rename a callback or an attribute, and the hub
would then break at run time (a callback never called is a limit never enforced). pyproject
caps uvicorn below the next minor release; these tests are what to run before raising the cap
(`python3 dev.py test --latest`), and each failure names what moved.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from shared.http_guard import GuardedHttpToolsProtocol, TransportLimits, guarded_protocol

PRIVATE_MODULE = "uvicorn.protocols.http.httptools_impl"

# Every method the guard overrides, with the parameters it expects uvicorn to pass.
OVERRIDDEN = {
    "__init__": None,  # passed through as *args, **kwargs
    "connection_made": ("transport",),
    "connection_lost": ("exc",),
    "data_received": ("data",),
    "on_message_begin": (),
    "on_url": ("url",),
    "on_header": ("name", "value"),
    "on_headers_complete": (),
    "on_message_complete": (),
    "send_400_response": ("msg",),
    "on_response_complete": (),
}


def moved(what: str) -> str:
    return (
        f"uvicorn moved {what}, which shared/http_guard.py relies on: adapt the guard to this "
        "uvicorn release, or keep pyproject's upper bound on uvicorn below it"
    )


def test_the_private_module_still_holds_the_protocol_and_its_status_lines() -> None:
    module = pytest.importorskip(PRIVATE_MODULE, reason=moved(PRIVATE_MODULE))
    assert hasattr(module, "HttpToolsProtocol"), moved(f"{PRIVATE_MODULE}.HttpToolsProtocol")
    status_line = getattr(module, "STATUS_LINE", None)
    assert isinstance(status_line, dict), moved(f"{PRIVATE_MODULE}.STATUS_LINE")
    for status in (408, 431, 503):
        assert status_line.get(status, b"").startswith(f"HTTP/1.1 {status} ".encode()), moved(
            f"STATUS_LINE[{status}]"
        )


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_every_method_the_guard_overrides_exists_upstream_with_the_same_parameters(
    name: str,
) -> None:
    base = GuardedHttpToolsProtocol.__mro__[1]
    upstream = base.__dict__.get(name)
    assert callable(upstream), moved(f"HttpToolsProtocol.{name}")
    expected = OVERRIDDEN[name]
    if expected is not None:
        parameters = tuple(inspect.signature(upstream).parameters)[1:]
        assert parameters == expected, moved(f"the parameters of HttpToolsProtocol.{name}")


async def test_a_served_connection_has_the_state_the_guard_reads() -> None:
    """One real request through the guarded protocol, then every attribute the guard reads."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(app=app, http=guarded_protocol(TransportLimits()), lifespan="off")
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    # Config types the loaded class as a plain asyncio.Protocol; it is the guard's subclass.
    protocol_class = config.http_protocol_class
    assert issubclass(protocol_class, GuardedHttpToolsProtocol)
    protocol = protocol_class(config=config, server_state=state, app_state={})
    ours, theirs = socket.socketpair()
    try:
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
        await loop.sock_sendall(theirs, b"GET / HTTP/1.1\r\nhost: hub\r\n\r\n")
        theirs.setblocking(False)
        answer = await asyncio.wait_for(loop.sock_recv(theirs, 4096), timeout=10)
        assert answer.startswith(b"HTTP/1.1 204 "), answer

        assert protocol.connections is state.connections, moved("HttpToolsProtocol.connections")
        assert protocol in state.connections, moved("the connection set of ServerState")
        assert protocol.transport is transport, moved("HttpToolsProtocol.transport")
        assert protocol.loop is loop, moved("HttpToolsProtocol.loop")
        assert isinstance(state.default_headers, list), moved("ServerState.default_headers")
        assert hasattr(protocol, "client"), moved("HttpToolsProtocol.client")
        cycle = protocol.cycle
        assert cycle is not None, moved("HttpToolsProtocol.cycle")
        assert cycle.response_complete is True, moved("RequestResponseCycle.response_complete")
        # The lingering close swaps the transport the cycle closes after a response.
        assert "transport" in vars(cycle), moved("RequestResponseCycle.transport")
        # ...and relies on the transport closing itself at the client's EOF, which asyncio
        # does when the protocol's eof_received returns a false value.
        # Called as asyncio sees it (bool | None): uvicorn's own annotation says None.
        as_asyncio: asyncio.Protocol = protocol
        assert not as_asyncio.eof_received(), moved("HttpToolsProtocol.eof_received")
        transport.close()
    finally:
        theirs.close()
