"""The hub's Starlette application factory.

`create_app(settings)` builds a stateless app: the lifespan opens the Redis client (or uses
the one passed in), starts the event reader and, unless disabled, the maintenance loop, and
keeps them on `app.state.hub`. Nothing about jobs or workers is held in memory: any number
of hubs can serve one Redis, and a restart loses nothing.

Middleware, outermost first: request id + access log, CORS (only when origins are
configured), authentication, then per-token rate limits (hub/rate_limit.py). All are pure
ASGI, so streaming responses and WebSockets pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from hub import (
    dashboard,
    gateway,
    openapi,
    routes_gateway,
    routes_jobs,
    routes_legacy,
    routes_ops,
    routes_workers,
    ws,
    ws_legacy,
)
from hub.auth import Authenticator, AuthMiddleware
from hub.context import HubContext
from hub.events import EventHub
from hub.http_helpers import EXCEPTION_HANDLERS
from hub.maintenance import Maintenance, publish_policy
from hub.metrics import HubMetrics
from hub.rate_limit import RateLimitMiddleware
from hub.request_log import RequestContextMiddleware, silence_frame_traces
from hub.settings import HubSettings
from hub.webhooks import routes as webhook_routes
from hub.webhooks.deliverer import Deliverer
from shared.pool_set import PoolSet
from shared.redis_client import connect
from shared.redis_settings import RedisSettings
from shared.redis_types import RedisClient

log = logging.getLogger("hub.app")

REDIS_POOL_SIZE = 256


def redis_client(settings: RedisSettings) -> RedisClient:
    """The shared command client (10 s read timeout, retries with backoff)."""
    return connect(settings, max_connections=REDIS_POOL_SIZE)


def create_app(
    settings: HubSettings,
    *,
    redis: RedisClient | None = None,
    maintenance: bool | None = None,
    deliver_webhooks: bool = True,
) -> Starlette:
    """Build the hub. `redis` overrides settings.redis (the caller keeps ownership; the
    event reader and the gateway open their own blocking clients from the settings it was
    made from, so it must come from shared.redis_client.connect); `maintenance` overrides
    settings.maintenance; `deliver_webhooks=False` keeps a hub that has a webhook secret from
    delivering (tests stand in for a hub that died)."""
    if redis is None and settings.redis is None:
        raise ValueError("create_app needs settings.redis or a redis client")
    silence_frame_traces()
    authenticator = Authenticator(settings)
    run_maintenance = settings.maintenance if maintenance is None else maintenance

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = redis is None
        if redis is not None:
            client = redis
        else:
            assert settings.redis is not None  # checked above
            client = redis_client(settings.redis)
        pools = PoolSet(client, settings.broker)
        metrics = HubMetrics()
        # One reader per pool: on a cluster each pool's stream lives in its own slot.
        events = EventHub({b.pool: b.reads.event_stream() for b in pools})
        events.add_listener(metrics.observe_event)
        hub = HubContext(settings, pools, events, metrics, authenticator)
        if settings.legacy_shared_token:
            log.warning(
                "HUB_LEGACY_SHARED_TOKEN is on: client tokens open /ws/monitor and may use "
                "request_stats and force_retry_job on the legacy endpoints, seeing every job; "
                "give monitors HUB_OPERATOR_TOKEN and turn it off once migrated"
            )
        try:
            for broker in pools:  # the job policy comes from the hubs, in every pool
                await publish_policy(broker, settings.priority)
            # An upgrade leaves the old version's Lua library behind: one client, one Redis.
            await pools.fleet_wide.prune_libraries()
        except (RedisError, OSError) as exc:  # maintenance publishes it again on every tick
            log.warning("could not publish the job policy yet: %s", type(exc).__name__)
        await events.start()
        await hub.gateway.start()
        tasks: list[asyncio.Task[None]] = []
        if run_maintenance:
            # One loop per pool, each with its own jitter and intervals: every step is
            # idempotent within its pool, so any number of hubs may run them at once.
            for broker in pools:
                loop = Maintenance(broker, settings)
                task = asyncio.create_task(
                    loop.run(hub.shutdown), name=f"emp-maintenance-{broker.pool}"
                )
                tasks.append(task)
        if settings.webhooks.enabled and deliver_webhooks:
            # Every pool's events are read (its own consumer group); retries and the dead
            # letter are the default pool's, like every key that belongs to no pool.
            hub.webhooks = Deliverer(
                pools.fleet_wide.webhooks,
                settings.webhooks,
                intake={b.pool: b.webhooks for b in pools},
            )
            await hub.webhooks.start()
        app.state.hub = hub
        try:
            yield
        finally:
            hub.begin_shutdown()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if hub.webhooks is not None:
                await hub.webhooks.stop()
            await hub.gateway.stop()
            await events.stop()
            app.state.hub = None
            if owned:
                await client.aclose()

    middleware = [Middleware(RequestContextMiddleware, access=settings.access_log)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                expose_headers=["Location", "X-Request-ID"],
            )
        )
    middleware.append(Middleware(AuthMiddleware, authenticator=authenticator))
    middleware.append(
        Middleware(
            RateLimitMiddleware,
            rate=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
    )
    return Starlette(
        routes=[
            *routes_jobs.routes,
            *routes_workers.routes,
            *routes_ops.routes,
            *openapi.routes,
            *ws.routes,
            *ws_legacy.routes,
            *routes_legacy.routes,
            *gateway.routes,
            *routes_gateway.routes,
            *webhook_routes.routes,
            *dashboard.routes,
        ],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
