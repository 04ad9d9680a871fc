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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hub.context import hub_of, require_operator
from hub.errors import not_found
from hub.fleet import merge_workers, why_waiting
from hub.http_helpers import json_response
from hub.output_urls import store_origin
from hub.pool_reads import Ref, summaries
from hub.pool_reads import heads as merged_heads
from hub.pool_routing import pool_query
from hub.queries import public_summary
from hub.series import chart_series
from hub.timeline import job_timeline
from shared.broker import Broker

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

RECENT = 25
FAIR_SHARE_ROWS = 30  # customers per pool in the fair-share table, heaviest first


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
    settings = hub_of(request).settings
    # The output store the hub re-signs URLs for is an image origin without being listed.
    store = store_origin(settings)
    origins = settings.dashboard_image_origins + ((store,) if store else ())
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
    """Everything the dashboard shows: stats, workers, queue head, recent and failed jobs,
    over every pool (or one: `?pool=`), each list merged in its own order."""
    hub = hub_of(request)
    require_operator(request)
    pool = pool_query(request.query_params)
    brokers = hub.selected(pool)
    jobs = {b.pool: b.reads.jobs for b in brokers}
    recent = dict.fromkeys(("pending", "active", "completed", "cancelled"), RECENT)
    heads = await merged_heads(jobs, {**recent, "failed": RECENT * 2})

    async def load(refs: list[Ref]) -> list[dict[str, Any]]:
        return [public_summary(j) for j in await summaries(jobs, refs) if j is not None]

    finished = await load(heads["completed"] + heads["cancelled"])
    finished.sort(key=lambda j: j.get("finished_at") or "", reverse=True)
    now = await hub.reads.now_ms()
    fleet = await hub.fleet.get()
    workers = merge_workers(fleet.get(b.pool, []) for b in brokers)
    queue: list[dict[str, Any]] = []
    waiting = await summaries(jobs, heads["pending"])
    for ref, job in zip(heads["pending"], waiting, strict=True):
        if job is not None:
            # ZRANGE from each pool's head: a job's index is its place in its pool's queue,
            # and only its pool's workers can take it.
            out = public_summary(job)
            out["queue_position"] = ref.index
            out["waiting"] = why_waiting(job, fleet.get(ref.pool, []), ref.index, now)
            queue.append(out)
    return json_response(
        {
            "stats": await hub.stats(pool),
            "workers": [w.to_public(now) for w in workers],
            "pending": queue,
            "active": await load(heads["active"]),
            "recent": finished[:RECENT],
            "failed": await load(heads["failed"]),
            "fair_share": await fair_share(brokers),
        }
    )


async def fair_share(brokers: Sequence[Broker]) -> list[dict[str, Any]]:
    """Fair share per pool and customer (shared/fair_reads.py), heaviest load first, at most
    FAIR_SHARE_ROWS per pool: what SCHEDULING_POLICIES=fair ranks customers by."""
    out: list[dict[str, Any]] = []
    for b in brokers:
        shares = await b.reads.fair.shares(b.settings.fair_share_half_life)
        out += [{"pool": b.pool, **s.to_public()} for s in shares[:FAIR_SHARE_ROWS]]
    return out


async def series(request: Request) -> Response:
    """The charts: the last hour per minute (hub/series.py), over every pool or `?pool=`."""
    hub = hub_of(request)
    require_operator(request)
    brokers = hub.selected(pool_query(request.query_params))
    return json_response(await chart_series([b.reads for b in brokers]))


async def timeline(request: Request) -> Response:
    """A job's events, for its page (hub/timeline.py). Operators see every job, so the
    stored id is looked up as it is, in the pool it names."""
    hub = hub_of(request)
    require_operator(request)
    job_id = request.path_params["job_id"]
    reads = hub.for_job(job_id).reads
    [job] = await reads.jobs.summaries([job_id])
    if job is None:
        raise not_found()
    return json_response(await job_timeline(reads, job))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/ui/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/dashboard/data", data, methods=["GET"]),
    Route("/dashboard/series", series, methods=["GET"]),
    Route("/dashboard/jobs/{job_id}/timeline", timeline, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
]
