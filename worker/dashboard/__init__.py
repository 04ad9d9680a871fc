"""The per-worker dashboard, served from inside the worker process.

`server` runs it (DashboardServer), `app` is the Starlette app, `snapshot` the status document
the page and `/api/status` share, `page` the template and static files, `http_helpers` the
responses, token check and security headers, `worker_view` the Protocol it reads the worker
through. Nothing is re-exported here: the worker imports `server` only when the dashboard is
enabled, so a worker without it never loads uvicorn's server.
"""
