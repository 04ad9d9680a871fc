"""Gateway grants, for operators: issue a worker's gateway token, list grants, revoke one.

    POST /gateway/grants                      {"worker_id", "services", ...} -> 201 with the
                                              token, shown this once (only its digest is kept)
    GET  /gateway/grants                      every grant (never a token)
    POST /gateway/grants/{worker_id}/revoke   204; the worker is cut off on every hub and the
                                              jobs it holds go back to the queue

Issuing for a worker id that already has a token replaces (and revokes) the old one.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.context import hub_of, require_operator
from hub.errors import not_found
from hub.http_helpers import json_response, read_body
from shared.validation import decode_json
from shared.worker_grants import grant_from_json

MAX_GRANT_BYTES = 256 * 1024


async def issue(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    body = await read_body(request, MAX_GRANT_BYTES, hub.settings.body_timeout_seconds)
    grant = grant_from_json(decode_json(body))
    token, grant = await hub.grants.issue(grant)
    answer = {**msgspec.to_builtins(grant), "token": token}
    return json_response(answer, 201)


async def listing(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    grants = await hub.grants.grants()
    return json_response({"grants": [msgspec.to_builtins(grant) for grant in grants]})


async def revoke(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    worker_id = request.path_params["worker_id"]
    if not await hub.grants.revoke(worker_id):
        raise not_found("gateway grant")
    hub.gateway.revoke(worker_id)  # this hub's connections at once; others by pub/sub
    return Response(status_code=204)


routes = [
    Route("/gateway/grants", issue, methods=["POST"]),
    Route("/gateway/grants", listing, methods=["GET"]),
    Route("/gateway/grants/{worker_id}/revoke", revoke, methods=["POST"]),
]
