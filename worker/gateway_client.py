"""The broker, as a gateway worker reaches it: through a hub, over one WebSocket, no Redis.

`GatewayClient` offers the same calls as `shared.broker.Broker` for the operations a worker
makes (register, heartbeat, claim, wait, progress, complete, fail, release, cancel), so the
runtime, the job runner and the heartbeat thread work unchanged over either. The protocol is
in shared/gateway_protocol.py.

Failures look like Redis outages to the caller: a lost connection, a hub that is away or a
hub that cannot reach Redis raise `GatewayUnavailable`, a ConnectionError, which the worker
already retries with backoff (TRANSIENT_ERRORS). The next call connects again, to the next
hub in the list when there are several, and the leases live on as long as a heartbeat gets
through some hub within the lease timeout. A refused or revoked token raises
`GatewayRefused`, a ConfigError: retrying cannot help, the worker stops and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import msgspec
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from shared.broker_replies import (
    CancelResult,
    Claim,
    FailOutcome,
    Fence,
    NoClaim,
    WorkerState,
)
from shared.capabilities import Capabilities
from shared.config import ConfigError
from shared.gateway_protocol import CLOSE_REFUSED, PATH, claim_from_wire

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 60.0
WAIT_MARGIN = 10.0  # past a wait's own timeout, the hub's answer is overdue
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a claim carries a payload of up to 10 MiB, escaped


class GatewayUnavailable(ConnectionError):
    """No answer from a hub right now (or the hub could not reach Redis): try again."""


class GatewayRefused(ConfigError):
    """The hub refused the gateway token (unknown or revoked)."""

    def __init__(self, message: str) -> None:
        super().__init__("WORKER_GATEWAY_TOKEN", message)


class GatewayCallError(Exception):
    """The hub refused one request (`kind` says why: invalid, forbidden, internal)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def gateway_url(base: str) -> str:
    """ws(s)://host:port/gateway/worker from a hub's http(s):// or ws(s):// base URL."""
    url = base.strip().rstrip("/")
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if url.startswith(plain):
            url = secure + url.removeprefix(plain)
    if not url.startswith(("ws://", "wss://")):
        raise ConfigError("WORKER_GATEWAY_URL", f"expected http(s):// or ws(s)://, got {base!r}")
    return url if url.endswith(PATH) else url + PATH


class GatewayClient:
    def __init__(
        self,
        hub_urls: Sequence[str],
        token: str,
        *,
        on_cancel: Callable[[str], None] | None = None,
    ) -> None:
        if not hub_urls:
            raise ConfigError("WORKER_GATEWAY_URL", "no hub URL given")
        self._urls = [gateway_url(u) for u in hub_urls]
        self._next_url = itertools.cycle(range(len(self._urls)))
        self._token = token
        self.on_cancel = on_cancel
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._refused: str | None = None
        self.connects = 0  # how many connections were opened (tests, dashboard)
        self.url: str | None = None

    # -- the connection -----------------------------------------------------------------

    async def _connection(self) -> ClientConnection:
        if self._refused is not None:
            raise GatewayRefused(self._refused)
        ws = self._ws
        if ws is not None:
            return ws
        async with self._connecting:
            if self._ws is not None:
                return self._ws
            url = self._urls[next(self._next_url)]
            try:
                ws = await connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    open_timeout=CONNECT_TIMEOUT,
                    max_size=MAX_MESSAGE_BYTES,
                    ping_interval=15,
                    ping_timeout=15,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._refused = f"the hub at {url} refused the gateway token (HTTP {status})"
                    raise GatewayRefused(self._refused) from None
                raise GatewayUnavailable(f"hub at {url} answered HTTP {status}") from None
            except (OSError, TimeoutError, WebSocketException) as exc:
                raise GatewayUnavailable(f"cannot reach the hub at {url}: {exc}") from None
            self._ws, self.url = ws, url
            self.connects += 1
            self._reader = asyncio.create_task(self._read(ws), name="gateway-reader")
            logger.info("connected to the hub gateway at %s", url)
            return ws

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._received(raw)
        except ConnectionClosed:
            pass
        finally:
            self._lost(ws)

    def _received(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("ignored a malformed message from the hub gateway")
            return
        if not isinstance(message, dict):
            return
        push = message.get("push")
        if push == "cancel":
            job_id = message.get("job_id")
            if isinstance(job_id, str) and self.on_cancel is not None:
                self.on_cancel(job_id)
            return
        if push == "revoked":
            self._refused = "the gateway token was revoked"
            return
        future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if future is None or future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            kind, text = str(error.get("kind")), str(error.get("message"))
            if kind == "unavailable":
                future.set_exception(GatewayUnavailable(text))
            else:
                future.set_exception(GatewayCallError(kind, text))
        else:
            future.set_result(message.get("result"))

    def _lost(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
            code = ws.close_code
            if code == CLOSE_REFUSED:
                self._refused = f"the hub closed the connection: {ws.close_reason or 'refused'}"
            else:
                logger.warning("lost the hub gateway at %s (close code %s)", self.url, code)
        failure: Exception = (
            GatewayRefused(self._refused) if self._refused else GatewayUnavailable("lost the hub")
        )
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()

    async def call(self, op: str, args: Mapping[str, Any], timeout: float = CALL_TIMEOUT) -> Any:
        ws = await self._connection()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await ws.send(orjson.dumps({"id": request_id, "op": op, "args": args}).decode())
            return await asyncio.wait_for(future, timeout)
        except ConnectionClosed:
            raise GatewayUnavailable("lost the hub while sending") from None
        except TimeoutError:
            # A hub that does not answer is as good as gone: drop the connection so the
            # next call opens a fresh one (to the next hub, if there are several).
            await ws.close()
            raise GatewayUnavailable(f"no answer to {op} within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    # -- the broker calls a worker makes --------------------------------------------------

    async def register_worker(
        self, worker_id: str, caps: Capabilities, info: Mapping[str, Any] | None = None
    ) -> WorkerState:
        result = await self.call("register", {"caps": _caps(caps), "info": dict(info or {})})
        return cast(WorkerState, result)

    async def heartbeat(
        self,
        worker_id: str,
        *,
        status: str = "idle",
        running: Mapping[str, str] | None = None,
        caps: Capabilities | None = None,
    ) -> list[str]:
        args: dict[str, Any] = {"status": status, "running": dict(running or {})}
        if caps is not None:
            args["caps"] = _caps(caps)
        return [str(job_id) for job_id in await self.call("heartbeat", args)]

    async def deregister_worker(self, worker_id: str) -> int:
        return int(await self.call("deregister", {}))

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        return bool(await self.call("set_state", {"state": state}))

    async def claim(
        self, worker_id: str, caps: Capabilities | bytes, *, hops: int = 0
    ) -> Claim | NoClaim:
        return claim_from_wire(await self.call("claim", {"caps": _caps(caps), "hops": hops}))

    async def wait_for_work(
        self, services: Sequence[str], timeout: float, *, worker_id: str = ""
    ) -> int | None:
        """`worker_id` is implied: the hub waits on the doorbell of the worker its grant
        names (hub/gateway.py)."""
        if not services:
            return None
        args = {"services": list(services), "timeout": timeout}
        hops = await self.call("wait", args, timeout=timeout + WAIT_MARGIN)
        return int(hops) if hops is not None else None

    async def progress(
        self, worker_id: str, job_id: str, token: str, progress: float, message: str = ""
    ) -> Fence:
        value = min(max(float(progress), 0.0), 100.0)
        args = {"job_id": job_id, "token": token, "progress": value, "message": message[:1000]}
        return cast(Fence, await self.call("progress", args))

    async def complete(self, worker_id: str, job_id: str, token: str, result: Any) -> Fence:
        args = {"job_id": job_id, "token": token, "result": result}
        return cast(Fence, await self.call("complete", args))

    async def complete_and_claim(
        self, worker_id: str, job_id: str, token: str, result: Any, caps: bytes
    ) -> tuple[Fence, Claim | NoClaim]:
        args = {"job_id": job_id, "token": token, "result": result, "caps": _caps(caps)}
        fence, claimed = await self.call("complete_and_claim", args)
        return cast(Fence, fence), claim_from_wire(claimed)

    async def fail(
        self, worker_id: str, job_id: str, token: str, error: str, *, retryable: bool = True
    ) -> FailOutcome:
        args = {"job_id": job_id, "token": token, "error": error[:4000], "retryable": retryable}
        return cast(FailOutcome, await self.call("fail", args))

    async def release(self, worker_id: str, job_id: str, token: str, reason: str = "") -> Fence:
        args = {"job_id": job_id, "token": token, "reason": reason[:1000]}
        return cast(Fence, await self.call("release", args))

    async def cancel(self, job_id: str, reason: str = "cancelled") -> CancelResult:
        outcome = await self.call("cancel", {"job_id": job_id, "reason": reason[:1000]})
        return CancelResult(outcome=outcome)


def _caps(caps: Capabilities | bytes) -> Any:
    """Capabilities as JSON, passing already-encoded ones through as they are."""
    if isinstance(caps, bytes):
        return orjson.Fragment(caps)
    return msgspec.to_builtins(caps)
