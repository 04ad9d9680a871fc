"""Compatibility with the original emp-redis WebSocket protocol (docs/PROTOCOL-LEGACY.md).

`/ws/client/{client_id}` and `/ws/monitor/{monitor_id}` speak the original message shapes
(docs/PROTOCOL-LEGACY.md#messages-from-clients) on top of the new broker, so existing submit
clients and monitors keep working. Workers are not served here: they use the pull protocol.

What differs from the original, on purpose: a job's status reads `processing` while a
worker holds it (the original stored `claimed`), every subscriber of a job gets its updates
(the original's subscriptions were broken), monitors need the operator token and
`force_retry_job` too (unless HUB_LEGACY_SHARED_TOKEN), ids the broker cannot store as
written are stored escaped (hub/legacy_ids.py); the full list, with the reasons, is
docs/PROTOCOL-LEGACY.md#differences-from-the-original. Authentication failures are reported
the original way: the socket is accepted, an `error` message sent, then it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from typing import Any

import orjson
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from hub.auth import Principal
from hub.context import HubContext, hub_of
from hub.events import Event
from hub.legacy_ids import unescape
from hub.legacy_messages import (
    REST_CLIENT_ID,
    job_status_message,
    legacy_client_id,
    legacy_progress,
    legacy_status,
    stats_broadcast,
    stats_fingerprint,
    type_position,
)
from hub.legacy_submit import effective_priority, legacy_request, visible_legacy_id
from hub.pool_routing import route
from hub.priority import refuse_past_deadline
from hub.settings import HubSettings
from hub.ws import Session, run_session
from shared.errors import InvalidInput
from shared.job import Job
from shared.pools import pooled_id
from shared.validation import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)
MAX_CACHED_JOBS = 10_000


def legacy_operator(settings: HubSettings, principal: Principal) -> bool:
    """Whether `principal` may do, on the legacy endpoints, what needs the operator token:
    an operator, or with HUB_LEGACY_SHARED_TOKEN any client token not bound to a customer
    (the original's one shared token did everything; a customer-bound token never sees
    other customers' jobs)."""
    if principal.operator:
        return True
    return settings.legacy_shared_token and principal.customer_id is None


class LegacySession(Session):
    """One original-protocol socket; `monitor` sockets also get fleet broadcasts."""

    def __init__(
        self, hub: HubContext, ws: WebSocket, principal: Principal, conn_id: str, monitor: bool
    ) -> None:
        super().__init__(hub, ws, principal)
        self.conn_id = conn_id
        self.monitor = monitor
        self.channels: set[str] | None = None
        # Per followed job: the worker holding it and the client that submitted it, so
        # relays carry them as the original's models require (read once per job).
        self.job_workers: dict[str, str] = {}
        self.job_clients: dict[str, str] = {}
        if monitor:
            self.sub.follow_everything()

    async def send(self, message: dict[str, Any]) -> None:
        job_id = message.get("job_id")
        if isinstance(job_id, str):  # as the client named it (hub/legacy_ids.py)
            message["job_id"] = unescape(job_id)
        message.setdefault("timestamp", time.time())
        await super().send(message)

    async def fail(self, error: str, **details: Any) -> None:
        await self.send(
            {"type": "error", "error": error, **({"details": details} if details else {})}
        )

    # -- hub -> client relays ---------------------------------------------------------

    async def deliver(self, event: Event) -> None:
        d = event.data
        if event.kind == "worker":
            if self.monitor and self._wants("worker_status"):
                status = {"worker_up": "idle", "worker_down": "disconnected"}.get(
                    event.type, str(d.get("state", event.type))
                )
                await self.send(
                    {
                        "type": "worker_status",
                        "worker_id": event.worker_id,
                        "status": status,
                        "reason": d.get("reason"),
                    }
                )
            return
        job_id = event.job_id or ""
        if event.type in ("claimed", "released", "completed") and event.worker_id:
            self._remember(self.job_workers, job_id, event.worker_id)
        message: dict[str, Any] | None = None
        if event.type == "progress":
            message = {
                "type": "update_job_progress",
                "status": "processing",
                "progress": legacy_progress(d.get("progress")),
                "message": d.get("message", ""),
            }
        elif event.type == "completed":
            result = await self.hub.for_job(job_id).reads.jobs.result(job_id)
            message = {"type": "complete_job", "result": result}
        elif event.type in ("failed", "retrying"):
            message = {
                "type": "fail_job",
                "error": d.get("error", ""),
                "retrying": event.type == "retrying",
                "attempts": d.get("attempts"),
            }
        elif event.type in ("claimed", "cancelled", "released"):
            status = {"claimed": "processing", "released": "pending"}.get(event.type, event.type)
            message = {
                "type": "response_job_status",
                "status": status,
                "message": d.get("reason", ""),
            }
        if message is not None:
            # The original's models require a string worker_id on every relay; monitors
            # also got the submitting client's id (the page shows it on each job).
            worker_id, client_id = await self._owners(job_id, event.worker_id)
            relay = {"type": message.pop("type"), "job_id": job_id, "worker_id": worker_id}
            relay.update(message)
            if self.monitor:
                relay["client_id"] = client_id
            await self.send(relay)
        if event.terminal:
            # The original protocol has no unsubscribe: a job that reached its end stops
            # counting against HUB_MAX_SUBSCRIPTIONS, so a long-lived submitter never fills
            # the cap with finished jobs.
            self.release(event.job_id)

    def release(self, job_id: str | None) -> None:
        if job_id is not None:
            self.sub.unfollow_job(job_id)
            self.last_seq.pop(job_id, None)
            self.job_workers.pop(job_id, None)
            self.job_clients.pop(job_id, None)

    @staticmethod
    def _remember(cache: dict[str, str], job_id: str, value: str) -> None:
        # A monitor follows every job and never releases the ones it only saw part of:
        # the caches are bounded, a forgotten entry is read again from the job.
        if len(cache) >= MAX_CACHED_JOBS and job_id not in cache:
            cache.clear()
        cache[job_id] = value

    async def _owners(self, job_id: str, worker_id: str | None) -> tuple[str, str]:
        """(worker id, client id) of a job for a relay: the event's worker, else the one
        remembered from its claim, else the job's; "" when no worker ever held it."""
        worker = worker_id or self.job_workers.get(job_id)
        client = self.job_clients.get(job_id)
        if worker is None or (client is None and self.monitor):
            job = await self.hub.for_job(job_id).get(job_id)
            if worker is None:
                worker = (job.worker_id if job is not None else None) or ""
                if worker:
                    self._remember(self.job_workers, job_id, worker)
            if client is None:
                client = legacy_client_id(job)
                self._remember(self.job_clients, job_id, client)
        return worker, client or REST_CLIENT_ID

    async def too_many(self, cap: int) -> None:
        await self.fail(
            f"Too many subscriptions: this connection already follows {cap} jobs "
            "(HUB_MAX_SUBSCRIPTIONS)",
            field="subscriptions",
        )

    async def overflowed(self) -> None:
        await self.fail("Some updates were dropped (client too slow); request the status again")

    async def deliver_snapshot(self, job: Job) -> None:
        await self.send(job_status_message(job))

    def may_receive(self, event: Event) -> bool:
        # A monitor admitted by HUB_LEGACY_SHARED_TOKEN gets worker_status, as the
        # original's did.
        if event.kind == "worker":
            return self.monitor and legacy_operator(self.hub.settings, self.principal)
        return super().may_receive(event)

    def _wants(self, message_type: str) -> bool:
        return self.channels is None or message_type in self.channels

    # -- client -> hub messages -------------------------------------------------------

    async def handle(self, text: str) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.fail("Invalid JSON")
            return
        if not isinstance(msg, dict):
            await self.fail("Invalid message: expected a JSON object")
            return
        kind = str(msg.get("type"))
        handler = getattr(self, f"on_{kind}", None)
        monitor_only = kind in ("subscribe", "get_system_status")
        if handler is None or (monitor_only and not self.monitor):
            await self.fail(f"Unsupported message type: {kind}")
            return
        try:
            await handler(msg)
        except InvalidInput as exc:
            await self.fail(f"Invalid {exc.field}: {exc.message}", field=exc.field)

    async def on_submit_job(self, msg: dict[str, Any]) -> None:
        if not await self.room_for(False):  # checked before anything is written
            return
        req = legacy_request(
            self.hub, self.principal, msg, client_id=self.conn_id, id_field="message_id"
        )
        if req.id is None:  # pragma: no cover - legacy_request always sets one
            raise InvalidInput("message_id", "missing")
        broker = self.hub.pools.brokers[
            route(req, self.hub.settings.pool_rules, self.hub.pools.names, "")
        ]
        stored_id = pooled_id(broker.pool, req.id)  # the id the pool's Broker will store
        now = int(time.time() * 1000)
        refuse_past_deadline(req, now)
        async with self.lock:
            self.sub.follow_job(stored_id)  # before the submit: no event can slip past
            submitted = await broker.submit(
                req,
                effective_priority=effective_priority(self.hub, self.principal, req, now),
                max_priority=self.principal.max_priority,
            )
            job = await broker.get(submitted.job_id)
            if job is None or not self.principal.can_see(job.customer_id):
                self.sub.unfollow_job(stored_id)
                await self.fail(f"Job id {msg['message_id']} already in use")
                return
            # Relay what happens after the accepted event (seq 1) for a new job.
            self.last_seq[job.id] = 1 if submitted.created else job.event_seq
            await self.send(
                {
                    "type": "job_accepted",
                    "job_id": job.id,
                    "status": legacy_status(job.status),
                    "position": await type_position(broker, job),
                    "estimated_start": None,
                    "notified_workers": 0,
                }
            )

    async def _visible(self, msg: dict[str, Any]) -> str | None:
        """The stored id of the job `msg` names, if this token may see it (checked before
        anything loads the job: hub/job_access.py)."""
        job_id = msg.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            await self.fail("Missing job_id")
            return None
        stored = await visible_legacy_id(self.hub, self.principal, job_id)
        if stored is None:
            await self.fail(f"Job {job_id} not found")
        return stored

    async def _follow(self, job_id: str) -> Job | None:
        async with self.lock:
            self.sub.follow_job(job_id)
            job = await self.hub.for_job(job_id).get(job_id)
            if job is not None:
                self.last_seq[job_id] = job.event_seq
            if job is None or job.status.terminal:
                self.release(job_id)  # nothing more will happen to it
            return job

    async def _room_to_follow(self, msg: dict[str, Any]) -> bool:
        asked = msg.get("job_id")
        followed = isinstance(asked, str) and self.followed_id(asked) is not None
        return await self.room_for(followed)

    async def on_request_job_status(self, msg: dict[str, Any]) -> None:
        if not await self._room_to_follow(msg):
            return
        job_id = await self._visible(msg)
        if job_id is None:
            return
        job = await self._follow(job_id)
        if job is not None:
            await self.send(job_status_message(job))

    async def on_subscribe_job(self, msg: dict[str, Any]) -> None:
        if not await self._room_to_follow(msg):
            return
        job_id = await self._visible(msg)
        if job_id is None:
            return
        await self._follow(job_id)
        await self.send({"type": "subscription_confirmed", "job_id": job_id})

    async def on_cancel_job(self, msg: dict[str, Any]) -> None:
        job_id = await self._visible(msg)
        if job_id is None:
            return
        reason = str(msg.get("reason") or "Manually cancelled")[:1000]
        result = await self.hub.for_job(job_id).cancel(job_id, reason)
        if result.outcome != "cancelled":
            await self.fail(f"Job {job_id} is {result.was or 'gone'} and cannot be cancelled")
            return
        if self.sub.everything or job_id in self.sub.jobs:
            # The `cancelled` relay of the followed job is the reply: the original sent
            # one response_job_status, not an ack and then a relay.
            return
        await self.send(
            {
                "type": "response_job_status",
                "job_id": job_id,
                "status": "cancelled",
                "message": reason,
            }
        )

    async def on_force_retry_job(self, msg: dict[str, Any]) -> None:
        if not legacy_operator(self.hub.settings, self.principal):
            await self.fail("force_retry_job needs the operator token")
            return
        job_id = await self._visible(msg)
        if job_id is None:
            return
        broker = self.hub.for_job(job_id)
        outcome = await broker.retry(job_id)
        if outcome != "ok":
            job = await broker.get(job_id)
            status = job.status if job is not None else "gone"
            await self.fail(f"Job {job_id} is {status}; only failed jobs can be retried")
            return
        await self.send(
            {
                "type": "response_job_status",
                "job_id": job_id,
                "status": "pending",
                "message": "retry requested",
            }
        )

    async def on_stay_alive(self, msg: dict[str, Any]) -> None:
        if self.monitor:
            await self.send({"type": "stay_alive_response"})
        else:
            await self.send(
                {"type": "response_job_status", "job_id": "keep-alive", "status": "acknowledged"}
            )

    async def on_subscribe_stats(self, msg: dict[str, Any]) -> None:
        await self.send(
            {"type": "subscription_confirmed", "job_id": "stats", "channels": ["stats"]}
        )

    async def on_request_stats(self, msg: dict[str, Any]) -> None:
        if not legacy_operator(self.hub.settings, self.principal):
            await self.fail("request_stats needs the operator token")
            return
        full = await stats_broadcast(self.hub)
        await self.send({"type": "response_stats", "stats": full["system"]})
        if msg.get("message_id"):
            await self.send(
                {
                    "type": "ack",
                    "message_id": f"ack-{time.time()}",
                    "original_id": msg["message_id"],
                    "original_type": "request_stats",
                }
            )

    async def on_subscribe(self, msg: dict[str, Any]) -> None:
        channels = msg.get("channels")
        if isinstance(channels, list) and all(isinstance(c, str) for c in channels):
            self.channels = set(channels) if channels else None
        await self.send(
            {
                "type": "subscription_confirmed",
                # The original sent none here, but its SubscriptionConfirmedMessage requires
                # a job_id; "monitor" names the subscription, as "stats" does for clients.
                "job_id": "monitor",
                "monitor_id": self.conn_id,
                "channels": sorted(self.channels or []),
            }
        )
        await self.broadcast_stats()

    async def on_get_system_status(self, msg: dict[str, Any]) -> None:
        await self.broadcast_stats()

    async def broadcast_stats(self) -> None:
        if self._wants("stats_broadcast"):
            await self.send(await stats_broadcast(self.hub))

    async def stats_loop(self) -> None:
        """`stats_broadcast` as the original timed it: on connect, every
        HUB_STATS_CHANGE_SECONDS (1 s) while something changed, and every
        HUB_STATS_INTERVAL_SECONDS (5 s) regardless. No `ack` follows: the original page
        only logs acks, and matches them to requests it sent, never to broadcasts."""
        settings = self.hub.settings
        tick = min(settings.stats_change_interval, settings.stats_interval)
        last: bytes | None = None
        sent_at = -math.inf
        while not self.sub.closed:
            if self._wants("stats_broadcast"):
                doc = await stats_broadcast(self.hub)
                seen = stats_fingerprint(doc)
                now = time.monotonic()
                if seen != last or now - sent_at >= settings.stats_interval:
                    await self.send(doc)
                    last, sent_at = seen, now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.hub.shutdown.wait(), tick)


async def _legacy_endpoint(ws: WebSocket, monitor: bool) -> None:
    hub = hub_of(ws)
    conn_id = ws.path_params["conn_id"]
    principal = ws.scope.get("auth")
    await ws.accept()
    if not isinstance(principal, Principal):
        reason: str | None = "Invalid token"
    elif monitor and not legacy_operator(hub.settings, principal):
        reason = "not allowed (monitors need the operator token)"
    elif not _ID_RE.fullmatch(conn_id):
        reason = "invalid connection id"
    else:
        reason = None
    if reason is not None or not isinstance(principal, Principal):
        await ws.send_text(
            orjson.dumps({"type": "error", "error": f"Authentication failed: {reason}"}).decode()
        )
        await ws.close(1008)
        return
    session = LegacySession(hub, ws, principal, conn_id, monitor)
    registry = hub.legacy.monitors if monitor else hub.legacy.clients
    registry.add(conn_id)
    hub.metrics.connections.labels("legacy").inc()
    role = "monitor" if monitor else "client"
    await session.send(
        {
            "type": "connection_established",
            "message": f"Connected to emp-redis hub as {role} {conn_id}",
        }
    )
    loops = [session.receive(), session.pump()]
    if monitor:
        loops.append(session.stats_loop())

    def closed() -> None:
        session.sub.close()
        registry.discard(conn_id)
        hub.metrics.connections.labels("legacy").dec()

    await run_session(ws, loops, closed)


async def client_endpoint(ws: WebSocket) -> None:
    await _legacy_endpoint(ws, monitor=False)


async def monitor_endpoint(ws: WebSocket) -> None:
    await _legacy_endpoint(ws, monitor=True)


routes = [
    WebSocketRoute("/ws/client/{conn_id}", client_endpoint),
    WebSocketRoute("/ws/monitor/{conn_id}", monitor_endpoint),
]
