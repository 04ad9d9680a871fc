"""The per-process objects every route needs, built by the app's lifespan.

Kept on `app.state.hub` (not in the lifespan's per-request state) so that a second uvicorn
server on WS_PORT can serve the same app without running the lifespan twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from hub.auth import Authenticator, Principal
from hub.errors import ApiError, forbidden, not_found
from hub.events import EventHub
from hub.fleet import FleetCache, merge_workers
from hub.gateway_relay import GatewayRelay
from hub.metrics import HubMetrics
from hub.output_urls import Signer, signer_of
from hub.pool_routing import selected_pools
from hub.settings import HubSettings
from hub.stats import compute_stats
from hub.webhooks.deliverer import Deliverer
from shared.broker import Broker
from shared.pool_set import PoolSet
from shared.reads import Reads
from shared.worker_grants import GrantStore
from shared.worker_view import WorkerView


@dataclass
class LegacyRegistry:
    """The original protocol's connections on this hub (reported in `stats_broadcast`)."""

    clients: set[str] = field(default_factory=set)
    monitors: set[str] = field(default_factory=set)


@dataclass
class HubContext:
    settings: HubSettings
    # One Broker per pool this hub serves (POOLS): it accepts, lists and maintains them all.
    pools: PoolSet
    events: EventHub
    metrics: HubMetrics
    authenticator: Authenticator
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    legacy: LegacyRegistry = field(default_factory=LegacyRegistry)
    webhooks: Deliverer | None = None  # this hub's webhook delivery, when it delivers
    fleet: FleetCache[dict[str, list[WorkerView]]] = field(init=False)
    grants: GrantStore = field(init=False)
    gateway: GatewayRelay = field(init=False)
    # Signs fresh URLs for expired stored outputs (hub/output_urls.py); None: not configured.
    output_signer: Signer | None = field(init=False)

    def __post_init__(self) -> None:
        self.fleet = FleetCache(self._load_fleet, self.settings.fleet_cache_seconds)
        # Gateway grants belong to no pool: they live under the default pool's keys.
        self.grants = GrantStore(self.broker.redis, self.broker.keys)
        self.gateway = GatewayRelay(self.broker.redis, self.broker.settings)
        self.output_signer = signer_of(self.settings)

    @property
    def broker(self) -> Broker:
        """The `default` pool's Broker, keeper of the keys that belong to no pool (rate
        limits, gateway grants and gateway workers, webhook retries and dead letters).
        Submissions that no rule routes go to `pools.default` (the first of POOLS)."""
        return self.pools.fleet_wide

    @property
    def reads(self) -> Reads:
        """The `default` pool's read model; reads of a job use `for_job`, reads of the whole
        hub `selected`: the hub holds no Redis client of its own."""
        return self.broker.reads

    def for_job(self, job_id: str) -> Broker:
        """The Broker of the pool `job_id` names; 404 (as for an unknown job) when this hub
        serves no such pool: the id alone says where a job is, no lookup needed."""
        broker = self.pools.for_job(job_id)
        if broker is None:
            raise not_found()
        return broker

    def selected(self, pool: str | None) -> list[Broker]:
        """The Brokers a read covers: `?pool=` (400 naming `pool` unless served), else all."""
        return [self.pools.brokers[name] for name in selected_pools(pool, self.pools.names)]

    async def _load_fleet(self) -> dict[str, list[WorkerView]]:
        brokers = list(self.pools)
        fleets = await asyncio.gather(*(b.reads.fleet.live() for b in brokers))
        return {b.pool: fleet for b, fleet in zip(brokers, fleets, strict=True)}

    async def workers(self, pool: str | None = None) -> list[WorkerView]:
        """Live workers of one pool, or of every pool this hub serves (the union by worker
        id: a worker registers in each pool it serves). Cached (HUB_FLEET_CACHE_SECONDS)."""
        per_pool = await self.fleet.get()
        if pool is not None:
            return per_pool.get(pool, [])
        return merge_workers(per_pool.values())

    async def stats(self, pool: str | None = None) -> dict[str, Any]:
        """The /stats document over `pool` (None: every pool this hub serves)."""
        brokers = self.selected(pool)
        fleet = await self.fleet.get()
        return await compute_stats(
            {b.pool: b.reads for b in brokers}, {b.pool: fleet.get(b.pool, []) for b in brokers}
        )

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
