"""GET /jobs/{id}/events: one job's events as Server-Sent Events, for curl and EventSource.

Hand-rolled on StreamingResponse (a few lines; no extra dependency). The first frame is a
`snapshot` of the job, then one frame per event with `id:` = the job's event sequence, and
the stream ends after the job's terminal event (completed, failed, cancelled). A comment
line every 15 s keeps proxies from closing an idle stream and lets the server notice a
client that went away. The stream also ends when the hub shuts down, so it never holds up
a graceful stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from hub.context import hub_of, principal_of
from hub.errors import not_found
from hub.events import follow_job
from hub.job_access import visible_id
from shared.logs import job_id_var

PING_SECONDS = 15.0


def frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def job_events(request: Request) -> Response:
    hub = hub_of(request)
    principal = principal_of(request)
    stored = await visible_id(hub.pools, principal, request.path_params["job_id"])
    if stored is None:
        raise not_found()
    job_id_var.set(stored)
    job_id = stored
    broker = hub.for_job(job_id)

    async def stream() -> AsyncIterator[bytes]:
        hub.metrics.connections.labels("sse").inc()
        try:
            async with follow_job(hub.events, broker, job_id, ping=PING_SECONDS) as (
                snapshot,
                updates,
            ):
                if snapshot is None:
                    return
                yield frame("snapshot", snapshot.to_public(), snapshot.event_seq)
                if snapshot.status.terminal:
                    return
                async for update in updates:
                    if hub.shutdown.is_set():
                        return
                    if update is None:
                        yield b": ping\n\n"
                        continue
                    if update.job is not None:
                        yield frame("snapshot", update.job.to_public(), update.job.event_seq)
                    elif update.event is not None:
                        yield frame(update.event.type, update.event.to_wire(), update.event.seq)
                    if update.terminal:
                        return
        finally:
            hub.metrics.connections.labels("sse").dec()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
