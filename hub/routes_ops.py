"""Operational routes: liveness, readiness, statistics and Prometheus metrics.

/health answers as long as the process serves requests (for process supervisors);
/ready also needs Redis and the event reader (for load balancers: a hub that cannot reach
Redis should get no traffic). Both are public and reveal nothing about jobs. /stats and
/metrics need the operator token; both cover every pool this hub serves, or one with
`?pool=` (hub/stats.py, hub/metrics.py).
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.context import hub_of, require_operator
from hub.http_helpers import json_response
from hub.pool_routing import pool_query

READY_TIMEOUT = 2.0


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    hub = getattr(request.app.state, "hub", None)
    if hub is None:
        return json_response({"status": "starting", "redis": False}, 503)
    try:
        await asyncio.wait_for(hub.broker.ping(), READY_TIMEOUT)
        redis_ok = True
    except (RedisError, OSError, TimeoutError):
        redis_ok = False
    ok = redis_ok and hub.events.healthy and not hub.shutdown.is_set()
    body = {
        "status": "ready" if ok else "unavailable",
        "redis": redis_ok,
        "events": hub.events.healthy,
    }
    return json_response(body, 200 if ok else 503)


async def stats(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    return json_response(await hub.stats(pool_query(request.query_params)))


async def metrics(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    pool = pool_query(request.query_params)
    hub.selected(pool)  # a pool this hub does not serve is a 400, as everywhere
    if hub.metrics.stale:
        workers = await hub.workers()
        document = await hub.stats()
        hub.metrics.refresh(document, {s for w in workers for s in w.capabilities.services})
    return Response(hub.metrics.render(pool), media_type=hub.metrics.content_type)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
