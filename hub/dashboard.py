"""The operator dashboard: HTML shells at `/` and `/ui/jobs/{id}`, and the JSON feeds they show.

The pages carry no data and no secrets, so they are public; the browser script asks for the
operator token once, keeps it in sessionStorage, and uses it for the operator-only feeds
(`/dashboard/data`, the charts' `/dashboard/series`, a job's `/dashboard/jobs/{id}/timeline`),
the REST actions and the `/ws` live feed. Everything the page shows arrives as JSON and is
inserted as text (never as HTML), and a strict Content-Security-Policy allows only
same-origin scripts, so a job payload cannot script the operator's browser; images load only
from the hub and the configured output store (HUB_DASHBOARD_IMAGE_ORIGINS), so a result
cannot make the browser call a tracker. No CDN, no chart library: the charts are SVG drawn
by static/charts.js, so the page works offline and stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hub.context import hub_of, require_operator
from hub.errors import not_found
from hub.fleet import why_waiting
from hub.http_helpers import json_response
from hub.queries import public_summary
from hub.series import chart_series
from hub.stats import compute_stats
from hub.timeline import job_timeline

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

RECENT = 25


def csp(image_origins: tuple[str, ...]) -> str:
    """The pages' policy. Images only from the hub itself, inline data, and the configured
    output store (HUB_DASHBOARD_IMAGE_ORIGINS): a result naming an image anywhere else must
    not make the operator's browser fetch it (a tracker learns when and from where an
    operator looked). dashboard.js applies the same list before it adds an image."""
    img_src = " ".join(("'self'", "data:", "blob:", *image_origins))
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {img_src}; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
    )


def _page(request: Request, template: str, context: dict[str, Any]) -> Response:
    origins = hub_of(request).settings.dashboard_image_origins
    headers = {
        "Content-Security-Policy": csp(origins),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    context = {**context, "image_origins": " ".join(origins)}
    return templates.TemplateResponse(request, template, context, headers=headers)


async def index(request: Request) -> Response:
    return _page(request, "index.html", {})


async def job_page(request: Request) -> Response:
    return _page(request, "job.html", {"job_id": request.path_params["job_id"]})


async def favicon(request: Request) -> Response:
    return Response(status_code=204)


async def data(request: Request) -> Response:
    """Everything the dashboard shows: stats, workers, queue head, recent and failed jobs."""
    hub = hub_of(request)
    require_operator(request)
    reads = hub.reads
    recent = dict.fromkeys(("pending", "active", "completed", "cancelled"), RECENT)
    heads = await reads.jobs.heads({**recent, "failed": RECENT * 2})

    async def load(ids: list[str]) -> list[dict[str, Any]]:
        jobs = await reads.jobs.summaries(ids)
        return [public_summary(j) for j in jobs if j is not None]

    finished = await load(heads["completed"] + heads["cancelled"])
    finished.sort(key=lambda j: j.get("finished_at") or "", reverse=True)
    now = await reads.now_ms()
    workers = await hub.fleet.get()
    queue: list[dict[str, Any]] = []
    waiting = await reads.jobs.summaries(heads["pending"])
    for position, job in enumerate(waiting):  # ZRANGE from the head: index = position
        if job is not None:
            out = public_summary(job)
            out["queue_position"] = position
            out["waiting"] = why_waiting(job, workers, position, now)  # the column's words
            queue.append(out)
    return json_response(
        {
            "stats": await compute_stats(reads, workers),
            "workers": [w.to_public(now) for w in workers],
            "pending": queue,
            "active": await load(heads["active"]),
            "recent": finished[:RECENT],
            "failed": await load(heads["failed"]),
        }
    )


async def series(request: Request) -> Response:
    """The charts: the last hour per minute (hub/series.py)."""
    hub = hub_of(request)
    require_operator(request)
    return json_response(await chart_series(hub.reads))


async def timeline(request: Request) -> Response:
    """A job's events, for its page (hub/timeline.py). Operators see every job, so the
    stored id is looked up as it is."""
    hub = hub_of(request)
    require_operator(request)
    [job] = await hub.reads.jobs.summaries([request.path_params["job_id"]])
    if job is None:
        raise not_found()
    return json_response(await job_timeline(hub.reads, job))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/ui/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/dashboard/data", data, methods=["GET"]),
    Route("/dashboard/series", series, methods=["GET"]),
    Route("/dashboard/jobs/{job_id}/timeline", timeline, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
]
