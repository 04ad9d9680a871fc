"""Driving the dashboards in a real headless Chromium, through Playwright's async API.

The browser is Debian's `chromium` (`/usr/bin/chromium`), never a browser Playwright downloads:
the machines these tests run on have no route to Playwright's CDN. `python3 dev.py test` (and
so `.ci/run`) installs the package when it is missing and it runs as root on Debian.

The tests skip, with the reason in pytest's summary, only when they cannot run at all:

- the `playwright` package is not installed (it is in the `dev` extra), or
- no Chromium executable is found. `EMP_BROWSER=/path/to/chromium` chooses another one;
  a path that does not exist (`EMP_BROWSER=/nonexistent`) hides the browser on purpose.

A browser that is there but fails to start is a failure, not a skip.

Everything runs on the test's event loop next to the servers under test (uvicorn, the worker),
so there is no thread or second loop. Waits are Playwright's auto-waiting `expect` assertions
with a deadline, never sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.async_api",
    reason="the browser tests need the `playwright` package (in the dev extra: "
    "`python3 dev.py setup`, or `pip install playwright`); it drives the system Chromium, "
    "so no `playwright install` is needed",
)

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

BROWSER_ENV = "EMP_BROWSER"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# As root in a container: no sandbox. The network is closed, so nothing may phone home
# (without the background-networking flags Chromium retries refused connections all the time).
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
TIMEOUT_MS = 10_000  # every wait; generous for a loaded CI box, still fails fast on a bug
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}


def find_browser() -> str | None:
    """The Chromium to drive: `$EMP_BROWSER` when set (None when that path is not a file),
    else the first Debian location that exists, else `chromium` on PATH."""
    chosen = os.environ.get(BROWSER_ENV, "").strip()
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    for path in CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def require_browser() -> str:
    """The browser's path, or skip the test saying why and how to get one."""
    path = find_browser()
    if path is not None:
        return path
    chosen = os.environ.get(BROWSER_ENV, "").strip()
    where = f"{BROWSER_ENV}={chosen} is not an executable" if chosen else ", ".join(CANDIDATES)
    pytest.skip(
        f"no Chromium to drive ({where}): install Debian's `chromium` package "
        "(`apt-get install chromium`; `python3 dev.py test` does it when run as root), "
        f"or point {BROWSER_ENV} at a Chromium executable"
    )


@contextlib.asynccontextmanager
async def launch_browser() -> AsyncIterator[Browser]:
    """A headless Chromium. Playwright starts it with a fresh, empty temporary profile
    (`--user-data-dir` of its own, removed at close), and each context is isolated."""
    executable = require_browser()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=LAUNCH_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """What went wrong inside the page: uncaught exceptions, console errors, dialogs."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._on_console)
        page.on("dialog", self._on_dialog)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console.append(message.text)

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        with contextlib.suppress(Error):  # the page may be gone already
            await dialog.dismiss()

    def assert_clean(self, *, allowed_console: tuple[str, ...] = ()) -> None:
        """No script error, no alert, and no console error but those containing one of
        `allowed_console` (a refused request is logged by the browser itself, say)."""
        console = [m for m in self.console if not any(a in m for a in allowed_console)]
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"
        assert self.dialogs == [], f"the page showed dialogs: {self.dialogs}"
        assert console == [], f"errors on the page's console: {console}"


@dataclass
class BrowserSession:
    """One browser tab (in its own context: its own sessionStorage) and what it reported."""

    context: BrowserContext
    page: Page
    problems: PageProblems


@contextlib.asynccontextmanager
async def open_tab(browser: Browser) -> AsyncIterator[BrowserSession]:
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    problems = PageProblems()
    problems.watch(page)
    try:
        yield BrowserSession(context, page, problems)
    finally:
        await context.close()


async def mark_page(page: Page) -> None:
    """Tag the loaded document, so `assert_not_reloaded` can tell a live update from a reload."""
    await page.evaluate("window.__empNotReloaded = true")


async def assert_not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__empNotReloaded === true"), "the page was reloaded"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000, f"screenshot {path} is {len(data)} bytes"
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


expect.set_options(timeout=TIMEOUT_MS)

__all__ = [
    "BROWSER_ENV",
    "Browser",
    "BrowserSession",
    "Locator",
    "Page",
    "PageProblems",
    "assert_not_reloaded",
    "assert_png",
    "expect",
    "find_browser",
    "launch_browser",
    "mark_page",
    "open_tab",
    "require_browser",
]
