"""The WebSocket protocol at `/ws` (on HUB_PORT and WS_PORT): live job and fleet events.

Client -> hub (JSON text frames):
    {"type": "subscribe", "job_id": "..."}          one job: a `snapshot`, then its events
    {"type": "subscribe", "customer_id": "..."}     every job event of one customer
    {"type": "subscribe", "all": true}              everything, worker events too (operator)
    {"type": "unsubscribe", ...same selectors...}
    {"type": "ping"}                                -> {"type": "pong"}
Hub -> client:
    {"type": "welcome", "role": ..., "customer_id": ...}
    {"type": "subscribed" | "unsubscribed", ...selector...}
    {"type": "snapshot", "job": {...}}              the job as GET /jobs/{id} shows it
    {"type": "event", "event": {"kind", "event", "job_id", "seq", "data", "ts", ...}}
    {"type": "error", "error": {"field": ..., "message": ...}}

Ordering: per job, events arrive in `seq` order with no duplicates, after the snapshot.
The connection keeps one subscription; a lock makes "register, read snapshot, send it"
atomic with respect to forwarding, and forwarding drops any event already reflected in the
snapshot (seq <= the snapshot's event_seq).

A connection follows at most HUB_MAX_SUBSCRIPTIONS jobs and customers; past that a subscribe
gets an `error` frame with field `subscriptions`, and nothing is indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from hub.auth import Principal
from hub.context import HubContext, hub_of
from hub.events import Event, Overflow, Subscription
from hub.job_access import candidate_ids, visible_id
from shared.job import Job

log = logging.getLogger("hub.ws")


class Session:
    """One /ws connection: its subscription, per-job sequence tracking and send lock."""

    def __init__(self, hub: HubContext, ws: WebSocket, principal: Principal) -> None:
        self.hub = hub
        self.ws = ws
        self.principal = principal
        self.sub: Subscription = hub.events.subscribe()
        self.lock = asyncio.Lock()
        self.last_seq: dict[str, int] = {}

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(orjson.dumps(message).decode())

    async def error(self, field: str, message: str) -> None:
        await self.send({"type": "error", "error": {"field": field, "message": message}})

    async def room_for(self, already_followed: bool) -> bool:
        """Whether one more subscription fits under HUB_MAX_SUBSCRIPTIONS; answers the
        error itself when not. The cap bounds what one socket adds to the fan-out indexes
        and to every event's routing."""
        cap = self.hub.settings.max_subscriptions
        if already_followed or self.sub.size < cap:
            return True
        await self.too_many(cap)
        return False

    async def too_many(self, cap: int) -> None:
        await self.error(
            "subscriptions",
            f"this connection already follows {cap} jobs and customers, the most allowed "
            "(HUB_MAX_SUBSCRIPTIONS): unsubscribe from some first",
        )

    # -- commands ---------------------------------------------------------------------

    async def handle(self, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.error("body", "malformed JSON")
            return
        if not isinstance(msg, dict):
            await self.error("body", "expected a JSON object")
            return
        kind = msg.get("type")
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe"):
            await self._selector(msg, subscribe=kind == "subscribe")
        else:
            await self.error("type", f"unsupported message type: {kind!r}")

    async def _selector(self, msg: dict[str, Any], *, subscribe: bool) -> None:
        job_id, customer, everything = msg.get("job_id"), msg.get("customer_id"), msg.get("all")
        if isinstance(job_id, str) and job_id:
            await (self._follow_job(job_id) if subscribe else self._unfollow_job(job_id))
        elif isinstance(customer, str) and customer:
            if not self.principal.can_see(customer):
                await self.error("customer_id", "this token may only follow its own customer")
                return
            if subscribe:
                if not await self.room_for(customer in self.sub.customers):
                    return
                self.sub.follow_customer(customer)
            else:
                self.sub.unfollow_customer(customer)
            await self.send({"type": _ack(subscribe), "customer_id": customer})
        elif everything is True:
            if not self.principal.operator:
                await self.error("all", "operator token required")
                return
            self.sub.follow_everything(subscribe)
            await self.send({"type": _ack(subscribe), "all": True})
        else:
            await self.error("job_id", "give job_id, customer_id or all: true")

    async def _follow_job(self, asked: str) -> None:
        if not await self.room_for(self.followed_id(asked) is not None):
            return
        # Rights first, before any subscription exists: a subscription registered for a job
        # this token may not see would queue that job's events until it was taken back.
        job_id = await visible_id(self.hub.pools, self.principal, asked)
        if job_id is None:
            await self.error("job_id", "no such job")
            return
        async with self.lock:
            self.sub.follow_job(job_id)  # before the read: nothing can fall in between
            job = await self.hub.for_job(job_id).get(job_id)
            if job is None:  # expired since the check
                self.sub.unfollow_job(job_id)
                await self.error("job_id", "no such job")
                return
            self.last_seq[job_id] = job.event_seq
            await self.send({"type": "subscribed", "job_id": job_id})
            await self.deliver_snapshot(job)

    def followed_id(self, asked: str) -> str | None:
        """The stored id of a followed job the client names as `asked` (hub/job_access.py)."""
        for candidate in candidate_ids(self.principal, asked):
            if candidate in self.sub.jobs:
                return candidate
        return None

    async def _unfollow_job(self, asked: str) -> None:
        job_id = self.followed_id(asked) or asked
        async with self.lock:
            self.sub.unfollow_job(job_id)
            self.last_seq.pop(job_id, None)
            await self.send({"type": "unsubscribed", "job_id": job_id})

    # -- forwarding -------------------------------------------------------------------

    async def forward(self, event: Event) -> None:
        # Every event is checked against the connection's rights, whatever subscription
        # brought it here: the job and customer indexes decide what is routed, not what
        # this token may read.
        if not self.may_receive(event):
            return
        async with self.lock:
            job_id = event.job_id
            if event.kind == "job" and job_id in self.last_seq:
                last = self.last_seq[job_id]
                if event.seq <= last:
                    return
                if event.seq > last + 1:
                    await self._resnapshot(job_id)
                    return
                self.last_seq[job_id] = event.seq
            await self.deliver(event)

    def may_receive(self, event: Event) -> bool:
        """Job events of customers this token may see; fleet (worker) events for operators."""
        if event.kind == "job":
            return self.principal.can_see(event.customer_id)
        return self.principal.operator

    async def deliver(self, event: Event) -> None:
        """Send one event (the legacy protocol overrides the message shapes)."""
        await self.send({"type": "event", "event": event.to_wire()})

    async def deliver_snapshot(self, job: Job) -> None:
        await self.send({"type": "snapshot", "job": job.to_public()})

    async def _resnapshot(self, job_id: str) -> None:
        job = await self.hub.for_job(job_id).get(job_id)
        if job is not None:
            self.last_seq[job_id] = job.event_seq
            await self.deliver_snapshot(job)

    async def pump(self) -> None:
        """Forward events until the hub shuts down (the subscription ends)."""
        while True:
            try:
                event = await self.sub.next()
            except Overflow:
                # Too slow a reader: events were dropped. Followed jobs are repaired with
                # fresh snapshots; customer/all streams can only be told.
                async with self.lock:
                    await self.overflowed()
                    for job_id in list(self.last_seq):
                        await self._resnapshot(job_id)
                continue
            if event is None:
                return
            await self.forward(event)

    async def overflowed(self) -> None:
        await self.send({"type": "overflow", "message": "events were dropped: re-read state"})

    async def receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                text = raw.decode("utf-8", errors="replace")
            await self.handle(text)


async def run_session(ws: WebSocket, session_main: Any, on_close: Any = None) -> None:
    """Run a session's loops until either ends (client gone, hub stopping), then close."""
    tasks = [asyncio.ensure_future(coro) for coro in session_main]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                log.warning("websocket session ended: %s", type(exc).__name__)
    finally:
        if on_close is not None:
            on_close()
        with contextlib.suppress(Exception):
            await ws.close(1001)


async def ws_endpoint(ws: WebSocket) -> None:
    hub = hub_of(ws)
    principal = ws.scope.get("auth")
    if not isinstance(principal, Principal):  # the auth middleware lets only legacy through
        await ws.close(1008)
        return
    await ws.accept()
    session = Session(hub, ws, principal)
    hub.metrics.connections.labels("ws").inc()
    await session.send(
        {"type": "welcome", "role": principal.role, "customer_id": principal.customer_id}
    )

    def closed() -> None:
        session.sub.close()
        hub.metrics.connections.labels("ws").dec()

    await run_session(ws, [session.receive(), session.pump()], closed)


def _ack(subscribe: bool) -> str:
    return "subscribed" if subscribe else "unsubscribed"


routes = [WebSocketRoute("/ws", ws_endpoint)]
