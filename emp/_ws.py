"""What the synchronous and asynchronous event streams share about the WebSocket itself:
which failures are worth a reconnect, and how a refused handshake reads."""

from __future__ import annotations

import json
from typing import Any, Final

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from emp._config import Config
from emp.errors import ApiError, HubUnreachable, ProtocolError, Unauthorized, api_error

# A snapshot carries the job's payload and result (inline images included): allow far
# more than websockets' 1 MiB default, less than unbounded.
MAX_MESSAGE: Final = 64 * 1024 * 1024
CLOSE_TIMEOUT: Final = 2.0
# Failures a reconnect may cure: the network, a hub restarting or shutting down.
TRANSIENT: Final = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def decode(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("the hub sent a WebSocket message that is not JSON") from None


def refusal(error: BaseException) -> ApiError | None:
    """The error to raise for a handshake the hub refused for good; None when a reconnect
    may help (a 5xx while it restarts, a dropped connection)."""
    if not isinstance(error, InvalidStatus):
        return None
    status = error.response.status_code
    if status in (401, 403):  # the hub closes unauthenticated sockets before accepting
        return Unauthorized(status, "Authorization", "the hub refused the token for /ws")
    if status >= 500:
        return None
    return api_error(status, "", f"the hub refused the WebSocket upgrade of /ws (HTTP {status})")


def gave_up(config: Config, failures: int, error: BaseException) -> HubUnreachable:
    return HubUnreachable(
        f"event stream: cannot reach {config.ws_url} after {failures} tries "
        f"({type(error).__name__}: {error})"
    )
