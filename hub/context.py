"""The per-process objects every route needs, built by the app's lifespan.

Kept on `app.state.hub` (not in the lifespan's per-request state) so that a second uvicorn
server on WS_PORT can serve the same app without running the lifespan twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from hub.auth import Authenticator, Principal
from hub.errors import ApiError, forbidden
from hub.events import EventHub
from hub.fleet import FleetCache
from hub.gateway_relay import GatewayRelay
from hub.metrics import HubMetrics
from hub.settings import HubSettings
from hub.webhooks.deliverer import Deliverer
from shared.broker import Broker
from shared.reads import Reads
from shared.worker_grants import GrantStore


@dataclass
class LegacyRegistry:
    """The original protocol's connections on this hub (reported in `stats_broadcast`)."""

    clients: set[str] = field(default_factory=set)
    monitors: set[str] = field(default_factory=set)


@dataclass
class HubContext:
    settings: HubSettings
    broker: Broker
    events: EventHub
    metrics: HubMetrics
    authenticator: Authenticator
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    legacy: LegacyRegistry = field(default_factory=LegacyRegistry)
    webhooks: Deliverer | None = None  # this hub's webhook delivery, when it delivers
    fleet: FleetCache = field(init=False)
    grants: GrantStore = field(init=False)
    gateway: GatewayRelay = field(init=False)

    def __post_init__(self) -> None:
        self.fleet = FleetCache(self.reads.fleet.live, self.settings.fleet_cache_seconds)
        self.grants = GrantStore(self.broker.redis, self.broker.keys)
        self.gateway = GatewayRelay(self.broker.redis, self.broker.settings)

    @property
    def reads(self) -> Reads:
        """Everything routes read: the hub holds no Redis client of its own."""
        return self.broker.reads

    def begin_shutdown(self) -> None:
        """Tell long-lived streams (WebSocket, SSE, long-poll) to finish now, so a graceful
        stop does not wait for them to time out."""
        self.shutdown.set()
        self.events.end_all()


def hub_of(conn: HTTPConnection) -> HubContext:
    hub = getattr(conn.app.state, "hub", None)
    if hub is None:
        raise ApiError(503, "", "hub is starting")
    assert isinstance(hub, HubContext)
    return hub


def principal_of(conn: HTTPConnection) -> Principal:
    principal = conn.scope.get("auth")
    if not isinstance(principal, Principal):
        raise ApiError(401, "Authorization", "missing bearer token")
    return principal


def require_operator(conn: HTTPConnection) -> Principal:
    principal = principal_of(conn)
    if not principal.operator:
        raise forbidden()
    return principal
