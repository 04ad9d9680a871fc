"""REST routes for the worker fleet (operator only): list, inspect, pause, resume, drain.

Workers register and heartbeat in Redis themselves; the hub reads their records (through
`Broker.reads.fleet`) and changes only the operator state through `Broker.set_worker_state`,
which the claim script honours on the worker's next claim whatever the worker itself does.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.context import hub_of, require_operator
from hub.errors import not_found
from hub.http_helpers import json_response

STATES: dict[str, Literal["active", "paused", "draining"]] = {
    "pause": "paused",
    "resume": "active",
    "drain": "draining",
}


async def list_workers(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    workers = await hub.reads.fleet.live()
    now = await hub.reads.now_ms()
    return json_response({"workers": [w.to_public(now) for w in workers]})


async def show_worker(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    worker = await hub.reads.fleet.worker(request.path_params["worker_id"])
    if worker is None:
        raise not_found("worker")
    return json_response(worker.to_public(await hub.reads.now_ms()))


async def change_state(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    worker_id = request.path_params["worker_id"]
    state = STATES[request.url.path.rsplit("/", 1)[1]]
    if not await hub.broker.set_worker_state(worker_id, state):
        raise not_found("worker")
    worker = await hub.reads.fleet.worker(worker_id)
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
