"""The webhook dead letter, for operators.

GET  /webhooks/deliveries?status=failed|retrying&limit=&cursor=
     deliveries that failed for good (newest first), or that are being retried (by
     when they are due): id (the `webhook-id` receivers see), url, event, job,
     attempts, last error and HTTP status, times
POST /webhooks/deliveries/{delivery_id}/redeliver
     send a dead-lettered delivery again: same id and body, due at once, with a fresh
     retry horizon (409 while it is still being retried)

Retries and dead letters of every pool's deliveries are kept together under the default
pool's keys (they belong to no pool; hub/webhooks/deliverer.py), so these routes read one
place. A delivery from a pool other than the default has an id that starts with the pool
(`gpu-eu!1700000000000-0.job`), like its job's.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.context import hub_of, require_operator
from hub.errors import ApiError, not_found
from hub.http_helpers import json_response
from shared.errors import InvalidInput
from shared.webhook_queue import DELIVERY_STATUSES, DeliveryStatus

MAX_LIMIT = 500
_PARAMS = frozenset({"status", "limit", "cursor"})


def _page_params(request: Request) -> tuple[DeliveryStatus, int, int]:
    q = request.query_params
    unknown = set(q.keys()) - _PARAMS
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown query parameter")
    status = q.get("status") or "failed"
    if status not in DELIVERY_STATUSES:
        raise InvalidInput("status", f"expected one of {', '.join(DELIVERY_STATUSES)}")
    try:
        limit = int(q.get("limit") or 50)
    except ValueError:
        raise InvalidInput("limit", "expected an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be between 1 and {MAX_LIMIT}")
    cursor = q.get("cursor") or "0"
    if not cursor.isdigit() or len(cursor) > 9:
        raise InvalidInput("cursor", "not a cursor returned by this API")
    return status, limit, int(cursor)


async def deliveries(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    status, limit, offset = _page_params(request)
    found, more = await hub.broker.webhooks.listing(status, offset=offset, limit=limit)
    return json_response(
        {
            "deliveries": [d.to_public() for d in found],
            "next_cursor": str(offset + limit) if more else None,
        }
    )


async def redeliver(request: Request) -> Response:
    hub = hub_of(request)
    require_operator(request)
    delivery_id = request.path_params["delivery_id"]
    outcome = await hub.broker.webhooks.redeliver(delivery_id)
    if outcome == "missing":
        raise not_found("webhook delivery")
    if outcome == "not_failed":
        raise ApiError(409, "status", "the delivery is still being retried")
    if hub.webhooks is not None:
        hub.webhooks.wake()
    delivery = await hub.broker.webhooks.get(delivery_id)
    return json_response(delivery.to_public() if delivery is not None else {"id": delivery_id})


routes = [
    Route("/webhooks/deliveries", deliveries, methods=["GET"]),
    Route("/webhooks/deliveries/{delivery_id}/redeliver", redeliver, methods=["POST"]),
]
