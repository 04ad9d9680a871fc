"""What a stream entry is to webhooks: the deliveries it makes, each with its id and body.

A job event makes a delivery to the job's own subscription when it lists the event's type,
and one to the hub-wide URL (HUB_WEBHOOK_URL) when that lists it, unless that is the same
URL. Everything here is a pure function of the entry and the subscriptions, so a hub that
takes over an entry from a dead one builds exactly the deliveries, ids and bodies that the
dead one was sending: a receiver that deduplicates by `webhook-id` sees one of each.

The body follows the Standard Webhooks payload shape:

    {"type": "job.completed", "timestamp": "2026-01-01T12:00:00.000Z",
     "data": {"job_id": "...", "customer_id": "...", "event": "completed", "seq": 5,
              ...the event's own data (worker_id, run_ms; error, attempts; ...)}}

`timestamp` is when the event happened (the stream entry's time), `seq` the job's event
number (gap-free per job): receivers can order a job's events by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.job import ms_to_iso
from shared.pools import DEFAULT_POOL, pooled_id
from shared.webhook import Webhook


@dataclass(frozen=True, slots=True)
class Target:
    """A URL and the job event types it is sent."""

    url: str
    events: frozenset[str]


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery: `id` is its `webhook-id`, the same on every attempt."""

    id: str
    url: str
    body: bytes
    event: str
    job_id: str
    customer_id: str | None


def delivery_id(entry_id: str, target: str, pool: str = DEFAULT_POOL) -> str:
    """`{stream entry id}.{job|hub}`: unique per event and target, and stable across hubs.
    Each pool has a stream of its own whose entry ids may equal another's, so outside the
    default pool the id starts with the pool, as job ids do (`gpu-eu!1700000000000-0.job`)."""
    return pooled_id(pool, f"{entry_id}.{target}")


def body(entry_id: str, fields: Mapping[str, str]) -> bytes:
    try:
        data: Any = orjson.loads(fields.get("data") or "{}")
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):  # cjson writes an empty table as []
        data = {}
    etype = fields.get("type", "")
    document = {
        "type": f"job.{etype}",
        "timestamp": ms_to_iso(int(entry_id.split("-", 1)[0])),
        "data": {
            **data,
            "job_id": fields.get("job", ""),
            "customer_id": fields.get("customer") or None,
            "event": etype,
            "seq": int(fields.get("seq") or 0),
        },
    }
    return orjson.dumps(document)


def plan(
    entry_id: str,
    fields: Mapping[str, str],
    subscription: Webhook | None,
    hub_target: Target | None,
    pool: str = DEFAULT_POOL,
) -> list[Message]:
    """The deliveries one stream entry of `pool`'s stream makes (none for anything but a
    job event)."""
    if fields.get("kind") != "job":
        return []
    etype = fields.get("type", "")
    targets: list[tuple[str, str]] = []
    if subscription is not None and etype in subscription.events:
        targets.append(("job", subscription.url))
    same_url = bool(targets) and hub_target is not None and targets[0][1] == hub_target.url
    if hub_target is not None and etype in hub_target.events and not same_url:
        targets.append(("hub", hub_target.url))
    if not targets:
        return []
    payload = body(entry_id, fields)
    job_id = fields.get("job", "")
    customer = fields.get("customer") or None
    return [
        Message(delivery_id(entry_id, name, pool), url, payload, etype, job_id, customer)
        for name, url in targets
    ]
