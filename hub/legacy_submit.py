"""Submissions in the original protocol's shape, shared by the legacy WebSocket
(`submit_job`, hub/ws_legacy.py) and the legacy REST alias (`POST /api/jobs`,
hub/routes_legacy.py): the same job type, priority scale, id mapping and submitter tag."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import orjson

from hub.auth import Principal
from hub.context import HubContext
from hub.job_access import visible_id
from hub.legacy_ids import escape
from hub.legacy_messages import client_tag
from hub.priority import deadline_ms
from hub.settings import HubSettings
from shared.errors import InvalidInput
from shared.job import JobRequest, scoped_job_id
from shared.validation import convert

MAX_TAGS = 16  # JobRequest.tags
LEGACY_PRIORITY_SCALE = 10  # the original's 0-10 onto the broker's 0-100
# Fields of the new submission a legacy submit_job may also carry (not in the original).
EXTRA_FIELDS = ("requirements", "max_retries", "timeout_seconds", "tags", "deadline", "pool")


def legacy_job_id(value: object, field: str = "message_id") -> str | None:
    """The id to store for a client's chosen id: None (a generated id) when absent or
    empty, as in the original; its escaped form otherwise (hub/legacy_ids.py), never
    silently replaced."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    return escape(value, field)


def legacy_priority(settings: HubSettings, msg: dict[str, Any]) -> int:
    """The original's 0-10 priority on the broker's 0-100 scale (times 10), so a legacy
    "Emergency (10)" job ranks with REST jobs of priority 100, not below every default
    one (50). Absent: DEFAULT_JOB_PRIORITY, unscaled."""
    if msg.get("priority") is None:
        return settings.default_priority
    value = msg["priority"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise InvalidInput("priority", "must be an integer from 0 to 10 (the original scale)")
    return value * LEGACY_PRIORITY_SCALE


def legacy_payload(value: Any) -> Any:
    """A string payload is parsed as JSON, or wrapped as the original did."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return {"raw_payload": value}
    return value


def legacy_request(
    hub: HubContext,
    principal: Principal,
    msg: dict[str, Any],
    *,
    client_id: str | None,
    id_field: str,
    id_prefix: str = "job",  # of a generated id: job-<32 hex digits>, as shared.broker
) -> JobRequest:
    """The JobRequest for a legacy submission `msg` (`job_type`, `priority`, `payload`, the
    chosen id in `id_field`); `client_id`: the legacy client socket it came from, kept as
    a tag so monitors on any hub can name it (hub/legacy_messages.py)."""
    job_id = legacy_job_id(msg.get(id_field), id_field)
    customer = principal.customer_id or msg.get("customer_id")
    doc: dict[str, Any] = {
        "service_type": msg.get("job_type"),
        "priority": legacy_priority(hub.settings, msg),
        "payload": legacy_payload(msg.get("payload", {})),
        "id": job_id or f"{id_prefix}-{uuid.uuid4().hex}",
    }
    for key in EXTRA_FIELDS:
        if key in msg:
            doc[key] = msg[key]
    if customer is not None:
        doc["customer_id"] = customer
    tags = doc.get("tags", [])
    if client_id is not None and isinstance(tags, list) and len(tags) < MAX_TAGS:
        # A job already carrying the most tags allowed is relayed as a REST client's.
        doc["tags"] = [*tags, client_tag(client_id)]
    try:
        req = convert(doc, JobRequest)
    except InvalidInput as exc:
        if exc.field != "service_type":
            raise
        raise InvalidInput("job_type", exc.message) from None  # the name the client sent
    if job_id is not None and principal.customer_id is not None:
        # The customer's own space of ids, as on REST (hub/job_access.py).
        req = msgspec.structs.replace(req, id=scoped_job_id(principal.customer_id, job_id))
    return req


def effective_priority(hub: HubContext, principal: Principal, req: JobRequest, now: int) -> int:
    return hub.settings.priority.effective(
        req.priority or 0,
        req.customer_id,
        deadline_ms=deadline_ms(req),
        created_ms=now,
        now_ms=now,
        ceiling=principal.max_priority,
    )


async def visible_legacy_id(hub: HubContext, principal: Principal, asked: str) -> str | None:
    """The stored id of the job a legacy client names `asked`, if it may see it: the
    escaped form of a legacy id first (hub/legacy_ids.py), then the id as written (an
    operator may name a stored id, scoped `acme~m-1` or pooled)."""
    for candidate in dict.fromkeys((escape(asked, "job_id"), asked)):
        stored = await visible_id(hub.pools, principal, candidate)
        if stored is not None:
            return stored
    return None
