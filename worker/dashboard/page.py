"""The dashboard's page: its template, its static files and the formatting both share.

The page is rendered on the server from the very snapshot the JSON API returns (so it reads
right without JavaScript), then `static/dashboard.js` refreshes it every 2 s from
`/api/status`. There is no inline script or style, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import importlib.resources

import jinja2

NO_VALUE = "\u2013"  # an en dash: shown where there is no reading yet
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def load_static() -> dict[str, tuple[bytes, str]]:
    """Read `worker/dashboard/static/*` once, through importlib.resources so it also works
    from the zipapp; only a fixed set of names is ever served, so no path can escape the
    folder."""
    folder = importlib.resources.files("worker.dashboard").joinpath("static")
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("worker.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a template typo fails the tests, not the operator
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    env.filters["number"] = format_number
    return env


def format_duration(seconds: float | None) -> str:
    """Seconds for humans: 0.42s, 12.3s, 4m 05s, 3h 07m, 2d 04h (mirrored in dashboard.js)."""
    if seconds is None:
        return NO_VALUE
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def format_number(value: float | None, suffix: str = "", digits: int = 1) -> str:
    return NO_VALUE if value is None else f"{value:.{digits}f}{suffix}"
