"""REST routes for the worker fleet (operator only): list, inspect, pause, resume, drain.

Workers register and heartbeat in Redis themselves; the hub reads their records (through
`Broker.reads.fleet`) and changes only the operator state through `Broker.set_worker_state`,
which the claim script honours on the worker's next claim whatever the worker itself does.

A worker registers in every pool it serves (a record per pool): the hub lists the union by
worker id (`?pool=` lists one pool's), shows a worker with the jobs it holds in every
pool, and pauses, resumes or drains it in every pool it is registered in.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.context import HubContext, hub_of, require_operator
from hub.errors import not_found
from hub.fleet import merge_workers
from hub.http_helpers import json_response
from hub.pool_routing import pool_query
from shared.worker_view import WorkerView

STATES: dict[str, Literal["active", "paused", "draining"]] = {
    "pause": "paused",
    "resume": "active",
    "drain": "draining",
}


async def list_workers(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    brokers = hub.selected(pool_query(request.query_params))
    per_pool = await asyncio.gather(*(b.reads.fleet.live() for b in brokers))
    now = await hub.reads.now_ms()
    return json_response({"workers": [w.to_public(now) for w in merge_workers(per_pool)]})


async def _worker(hub: HubContext, worker_id: str) -> WorkerView | None:
    """The worker as every pool's record of it shows it (None: no pool has one)."""
    found = await asyncio.gather(*(b.reads.fleet.worker(worker_id) for b in hub.pools))
    merged = merge_workers([w] for w in found if w is not None)
    return merged[0] if merged else None


async def show_worker(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    worker = await _worker(hub, request.path_params["worker_id"])
    if worker is None:
        raise not_found("worker")
    return json_response(worker.to_public(await hub.reads.now_ms()))


async def change_state(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    worker_id = request.path_params["worker_id"]
    state = STATES[request.url.path.rsplit("/", 1)[1]]
    # In every pool: a worker paused in one pool only would go on claiming in the others.
    changed = await asyncio.gather(*(b.set_worker_state(worker_id, state) for b in hub.pools))
    if not any(changed):
        raise not_found("worker")
    worker = await _worker(hub, worker_id)
    if worker is None:
        raise not_found("worker")
    return json_response(worker.to_public(await hub.reads.now_ms()))


routes = [
    Route("/workers", list_workers, methods=["GET"]),
    Route("/workers/{worker_id}", show_worker, methods=["GET"]),
    *(
        Route(f"/workers/{{worker_id}}/{action}", change_state, methods=["POST"])
        for action in STATES
    ),
]
