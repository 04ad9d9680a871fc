"""The worker gateway: untrusted workers reach the broker through a hub, never through Redis.

`/gateway/worker` (WebSocket, `Authorization: Bearer <gateway token>`) serves the protocol
in shared/gateway_protocol.py. The hub runs the same Broker calls a direct worker makes, so
order, leases, fencing and events are the same for both kinds of worker, with these checks
in front:

- the worker id comes from the token's grant, never from a request, so a gateway worker can
  only register, heartbeat, claim and report as itself; the fenced scripts then refuse any
  report on a job it does not hold (a foreign job id or token answers `stale`);
- declared capabilities are narrowed to the grant (services, isolation and customers,
  regions, compliance) on every register, heartbeat and claim; see shared/worker_grants.py;
- a claim is refused (`limit`) while the worker holds `max_concurrency` leases;
- waits for work block only on the services the grant allows;
- `cancel` works only on a job the worker holds; there is no operation that reads a job;
- a revoked token closes the worker's connections on every hub (pub/sub, and a grant check
  every GRANT_CHECK_SECONDS on each connection in case a message was missed), and its held
  jobs go back to the queue.

Pools (shared/pools.py): a gateway worker registers, heartbeats, waits and claims in the
hub's default pool (the first of its POOLS). Reports on a job (progress, complete, fail,
release, cancel) go to the pool its id names, like every other use of a job id on the hub;
one for a pool this hub does not serve answers `stale` (cancel: refused), as a report on a
job the worker does not hold does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import msgspec
import orjson
from redis.exceptions import RedisError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.auth import bearer_token
from hub.context import HubContext, hub_of
from shared.broker import Broker
from shared.broker_replies import Claim, NoClaim
from shared.errors import EmpError, InvalidInput
from shared.gateway_protocol import (
    CLOSE_REFUSED,
    MAX_IN_FLIGHT,
    OPERATIONS,
    PATH,
    CancelArgs,
    ClaimArgs,
    CompleteArgs,
    CompleteClaimArgs,
    ErrorKind,
    FailArgs,
    HeartbeatArgs,
    ProgressArgs,
    RegisterArgs,
    ReleaseArgs,
    Request,
    StateArgs,
    WaitArgs,
    claim_to_wire,
)
from shared.redis_client import TRANSIENT_ERRORS
from shared.validation import convert
from shared.worker_grants import Grant, token_digest

log = logging.getLogger("hub.gateway")

GRANT_CHECK_SECONDS = 30.0
MAX_WAIT_SECONDS = 60.0
MAX_INFO_BYTES = 16 * 1024
STATUSES = frozenset({"idle", "busy", "stopping", "starting"})


class Refused(EmpError):
    """An operation the grant does not allow."""


class GatewaySession:
    """One gateway worker's connection: its grant, its requests in flight, its pushes."""

    def __init__(self, hub: HubContext, ws: WebSocket, grant: Grant, digest: str) -> None:
        self.hub = hub
        self.ws = ws
        self.grant = grant
        self.digest = digest
        self.worker_id = grant.worker_id
        self._send_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._revoked = asyncio.Event()

    # -- pushes (called by the relay) ---------------------------------------------------

    def push_cancel(self, job_id: str) -> None:
        self._spawn(self._send({"push": "cancel", "job_id": job_id}))

    def revoke(self) -> None:
        self._revoked.set()

    # -- the connection -----------------------------------------------------------------

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._receive(), name=f"gateway-{self.worker_id}"),
            asyncio.create_task(self._watch_grant()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._revoked.is_set() and not self.hub.shutdown.is_set():
            await self._cut_off()

    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            await self._slots.acquire()  # backpressure: stop reading past MAX_IN_FLIGHT
            self._spawn(self._answer(raw), slot=True)

    async def _watch_grant(self) -> None:
        """Return when the token is revoked (pub/sub, or found gone by a periodic check)."""
        while not self._revoked.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._revoked.wait(), GRANT_CHECK_SECONDS)
            if self._revoked.is_set():
                break
            try:
                if await self.hub.grants.by_digest(self.digest) is None:
                    self._revoked.set()
            except TRANSIENT_ERRORS:
                continue  # Redis is away: the next check decides

    async def _cut_off(self) -> None:
        log.info("gateway worker %s: token revoked; closing and releasing its jobs", self.worker_id)
        with contextlib.suppress(Exception):
            await self._send({"push": "revoked"})
        with contextlib.suppress(Exception):
            await self.ws.close(CLOSE_REFUSED, "gateway token revoked")
        try:
            await self.hub.broker.deregister_worker(self.worker_id)
        except (RedisError, OSError) as exc:
            log.warning("could not release the jobs of revoked worker %s: %s", self.worker_id, exc)

    def _spawn(self, coro: Any, *, slot: bool = False) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if slot:
                self._slots.release()

        task.add_done_callback(done)

    async def _send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message).decode()
        async with self._send_lock:
            await self.ws.send_text(data)

    # -- requests -----------------------------------------------------------------------

    async def _answer(self, raw: str) -> None:
        request_id: int | None = None
        try:
            try:
                request = msgspec.json.decode(raw, type=Request)
            except msgspec.ValidationError as exc:
                raise InvalidInput.from_msgspec(exc) from None
            except msgspec.DecodeError:
                raise InvalidInput("body", "malformed JSON") from None
            request_id = request.id
            kind = OPERATIONS.get(request.op)
            if kind is None:
                raise InvalidInput("op", f"unknown operation {request.op!r}")
            args = convert(request.args, kind, "args")
            result = await self._perform(request.op, args)
            reply: dict[str, Any] = {"id": request_id, "result": result}
        except InvalidInput as exc:
            reply = _error(request_id, "invalid", f"{exc.field}: {exc.message}")
        except Refused as exc:
            reply = _error(request_id, "forbidden", str(exc))
        except TRANSIENT_ERRORS as exc:
            reply = _error(request_id, "unavailable", f"Redis unavailable: {type(exc).__name__}")
        except Exception:
            log.exception("gateway request failed (worker %s)", self.worker_id)
            reply = _error(request_id, "internal", "the hub failed to perform the request")
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self._send(reply)

    async def _perform(self, op: str, args: Any) -> Any:
        broker = self.hub.broker
        me = self.worker_id
        if isinstance(args, RegisterArgs):
            info = {**args.info, "gateway": True, "gateway_hub": socket.gethostname()}
            if len(orjson.dumps(info)) > MAX_INFO_BYTES:
                raise InvalidInput("args.info", f"over {MAX_INFO_BYTES} bytes")
            # The worker's lease timeout is its own (its heartbeat interval fits in it); an
            # older worker that does not say gets this hub's.
            lease = _declared_lease(args.info)
            return await broker.register_worker(
                me, self.grant.cap(args.caps), info, lease_timeout=lease
            )
        if isinstance(args, HeartbeatArgs):
            if args.status not in STATUSES:
                raise InvalidInput("args.status", f"one of {', '.join(sorted(STATUSES))}")
            caps = self.grant.cap(args.caps) if args.caps is not None else None
            return await broker.heartbeat(
                me, status=args.status, running=args.running, caps=caps, registered_lease=True
            )
        if isinstance(args, StateArgs):
            return await broker.set_worker_state(me, args.state)
        if isinstance(args, ClaimArgs):
            claimed = await broker.claim(
                me, self.grant.cap(args.caps), hops=args.hops, max_leases=self.grant.max_concurrency
            )
            return claim_to_wire(claimed)
        if isinstance(args, WaitArgs):
            return await self._wait(args)
        if op == "deregister":
            return await broker.deregister_worker(me)
        return await self._report(op, args, me)

    async def _report(self, op: str, args: Any, me: str) -> Any:
        """A report on one job, to the Broker of the pool its id names."""
        job_id = getattr(args, "job_id", None)
        if not isinstance(job_id, str):
            raise InvalidInput("op", f"unknown operation {op!r}")  # pragma: no cover
        broker = self.hub.pools.for_job(job_id)
        if broker is None:  # a pool this hub does not serve: no job this worker holds here
            if isinstance(args, CancelArgs):
                raise Refused(f"job {job_id} is not held by worker {me}")
            if isinstance(args, CompleteClaimArgs):
                return ["stale", claim_to_wire(NoClaim("limit", None))]
            return "stale"
        if isinstance(args, ProgressArgs):
            return await broker.progress(me, args.job_id, args.token, args.progress, args.message)
        if isinstance(args, CompleteClaimArgs):
            return await self._complete_and_claim(broker, args)
        if isinstance(args, CompleteArgs):
            return await broker.complete(me, args.job_id, args.token, args.result)
        if isinstance(args, FailArgs):
            return await broker.fail(
                me, args.job_id, args.token, args.error, retryable=args.retryable
            )
        if isinstance(args, ReleaseArgs):
            return await broker.release(me, args.job_id, args.token, args.reason)
        if isinstance(args, CancelArgs):
            owner = await broker.owner(args.job_id)
            if owner is None or owner.worker_id != me:
                raise Refused(f"job {args.job_id} is not held by worker {me}")
            return (await broker.cancel(args.job_id, args.reason)).outcome
        raise InvalidInput("op", f"unknown operation {op!r}")  # pragma: no cover

    async def _complete_and_claim(self, broker: Broker, args: CompleteClaimArgs) -> Any:
        me = self.worker_id
        if args.caps is None:
            fence = await broker.complete(me, args.job_id, args.token, args.result)
            return [fence, claim_to_wire(NoClaim("limit", None))]
        caps = Broker.encode_capabilities(self.grant.cap(args.caps))
        # The script completes first, so the cap counts the leases left after it.
        fence, claimed = await broker.complete_and_claim(
            me, args.job_id, args.token, args.result, caps, max_leases=self.grant.max_concurrency
        )
        return [fence, claim_to_wire(claimed)]

    async def _wait(self, args: WaitArgs) -> int | None:
        waiter = self.hub.gateway.waiter
        services = [s for s in args.services if s in self.grant.services]
        if waiter is None or not services:
            await asyncio.sleep(min(args.timeout, MAX_WAIT_SECONDS))
            return None
        timeout = min(args.timeout, MAX_WAIT_SECONDS)
        try:
            # The server answers a BLPOP by its timeout; a silent link must not hold the
            # worker's wait forever.
            wait = waiter.wait_for_work(services, timeout, worker_id=self.worker_id)
            woken = await asyncio.wait_for(wait, timeout + 5)
        except TimeoutError:
            return None
        # The gateway's claims never accept handoffs (shared/lua/include/handoff.lua), so no
        # job is handed to a gateway worker; were one, its lease would go back as orphaned.
        return 0 if isinstance(woken, Claim) else woken


def _declared_lease(info: dict[str, Any]) -> float | None:
    """The lease timeout a gateway worker registers with (`info.lease_timeout_seconds`, its
    LEASE_TIMEOUT_SECONDS), within the setting's bounds; None when it gives none. A long
    lease gives an untrusted worker nothing new: the job's execution timeout still bounds
    how long it holds a job."""
    value = info.get("lease_timeout_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 3600:
        return float(value)
    return None


def _error(request_id: int | None, kind: ErrorKind, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"kind": kind, "message": message}}


async def gateway_endpoint(ws: WebSocket) -> None:
    hub = hub_of(ws)
    token = bearer_token(ws.scope)
    grant = None
    if token is not None:
        try:
            grant = await hub.grants.lookup(token)
        except TRANSIENT_ERRORS:
            await ws.close(1013, "Redis unavailable; try again")  # 1013: try again later
            return
    if token is None or grant is None:
        why = "no token" if token is None else "unknown or revoked token"
        log.info("refused a gateway connection: %s", why)
        await ws.close(CLOSE_REFUSED, "unknown or revoked gateway token")
        return
    await ws.accept()
    session = GatewaySession(hub, ws, grant, token_digest(token))
    hub.gateway.attach(session)
    hub.metrics.connections.labels("gateway").inc()
    try:
        await session.run()
    finally:
        hub.gateway.detach(session)
        hub.metrics.connections.labels("gateway").dec()


routes = [WebSocketRoute(PATH, gateway_endpoint)]
