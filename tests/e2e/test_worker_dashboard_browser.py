"""A real worker's own dashboard driven in a real headless Chromium.

The worker runs in-process with the simulation connector against the test Redis, and serves its
dashboard exactly as `emp-worker` does (DashboardServer on the first free port from 1511).
The page refreshes itself every 2 s; the tests wait for what an operator would see, with
deadlines, and check the effect in Redis. Skips only when no browser can be found (see
tests/browser_support.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.broker import Broker
from shared.job import JobStatus
from tests.browser_support import (
    Browser,
    BrowserSession,
    Locator,
    Page,
    assert_not_reloaded,
    expect,
    launch_browser,
    mark_page,
    open_tab,
)
from tests.factories import job as job_request
from tests.helpers import wait_until
from tests.worker_support import finished, running_worker, sim, worker_settings
from worker.dashboard.page import NO_VALUE
from worker.dashboard.server import DashboardServer
from worker.runtime import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = "worker-dashboard-token-4b7e"
WORKER_ID = "gpu-box-7"
# Long enough to be seen at two 2-second refreshes whatever the phase of the page's timer
# (200 steps of 20 ms can end just as the second refresh comes); the tests cancel it.
LONG_JOB = {"steps": 500, "step_ms": 20}


@contextlib.asynccontextmanager
async def worker_with_dashboard(redis_url: str, **env: str) -> AsyncIterator[tuple[Worker, str]]:
    """A running Worker and its dashboard's URL (on 127.0.0.1: the server binds only there)."""
    settings = worker_settings(redis_url, WORKER_ID, WORKER_DASHBOARD_ENABLED="true", **env)
    async with running_worker(settings) as worker:
        dashboard = DashboardServer(worker, settings)
        worker.dashboard_url = await dashboard.start()
        try:
            yield worker, worker.dashboard_url.replace("//localhost:", "//127.0.0.1:")
        finally:
            await dashboard.stop()


@pytest.fixture
async def worker(redis_url: str) -> AsyncIterator[tuple[Worker, str]]:
    async with worker_with_dashboard(redis_url, HUB_OPERATOR_TOKEN=TOKEN) as running:
        yield running


@pytest.fixture
async def browser(worker: tuple[Worker, str]) -> AsyncIterator[Browser]:
    """Depends on `worker` so that it closes first."""
    async with launch_browser() as launched:
        yield launched


@pytest.fixture
async def tab(browser: Browser) -> AsyncIterator[BrowserSession]:
    async with open_tab(browser) as session:
        yield session


def job_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#running-jobs tbody tr[data-job-id="{job_id}"]')


async def progress_of(page: Page, job_id: str) -> float:
    value = await job_row(page, job_id).locator("progress").evaluate("p => p.value")
    return float(value)


async def wait_for_progress_above(page: Page, job_id: str, floor: float) -> float:
    """Wait until the running row's bar shows more than `floor` percent; return the value."""
    await page.wait_for_function(
        """([id, floor]) => {
            const bar = document.querySelector(`#running-jobs tr[data-job-id="${id}"] progress`);
            return bar !== null && bar.value > floor;
        }""",
        arg=[job_id, floor],
    )
    return await progress_of(page, job_id)


async def test_status_live_progress_and_cancel_with_the_token(
    worker: tuple[Worker, str], broker: Broker, tab: BrowserSession
) -> None:
    running, url = worker
    page = tab.page
    await page.goto(url + "/")
    await expect(page).to_have_title(f"Worker {WORKER_ID} · emp-redis")
    await expect(page.locator("#worker-id")).to_have_text(WORKER_ID)
    await expect(page.locator("#status")).to_have_text("idle")
    await expect(page.locator("#state")).to_have_text("active")
    await expect(page.locator("#services")).to_have_text("simulation")
    await expect(page.locator("#slots")).to_have_text("0 / 1")
    await expect(page.locator('#connectors tr[data-connector="simulation"]')).to_contain_text(
        "healthy"
    )
    await expect(page.locator("#running-jobs tbody")).to_contain_text("No job running.")
    await expect(page.locator("#controls-disabled")).to_be_hidden()
    await expect(page.locator("#detail-hidden")).to_be_visible()
    await expect(page.locator("#pause")).to_be_enabled()
    await expect(page.locator("#resume")).to_be_disabled()
    await mark_page(page)

    # A long job: its row appears and its bar moves, refresh after refresh. Without the
    # operator's token the row names neither the job nor its customer, and cannot cancel.
    job_id = (
        await broker.submit(job_request("simulation", customer_id="acme", payload=sim(**LONG_JOB)))
    ).job_id
    anonymous = job_row(page, "#0")
    await expect(anonymous.locator(".job-customer")).to_have_text(NO_VALUE)
    await expect(anonymous.locator(".job-id")).to_have_text(NO_VALUE)
    await expect(anonymous.locator("button.cancel")).to_be_disabled()
    await expect(page.locator("#status")).to_have_text("busy")
    await expect(page.locator("#slots")).to_have_text("1 / 1")
    first = await wait_for_progress_above(page, "#0", 0)
    later = await wait_for_progress_above(page, "#0", first)
    assert 0 < first < later < 100
    await expect(anonymous.locator(".job-percent")).to_have_text(re.compile(r"^\d{1,2}%$"))
    assert job_id not in await page.content()
    await assert_not_reloaded(page)

    # With the token the next refresh names the job and its customer.
    await page.locator("#token").fill(TOKEN)
    await page.locator("#save-token").click()
    await expect(page.locator("#token-set")).to_be_visible()
    await expect(page.locator("#token-form")).to_be_hidden()
    await expect(page.locator("#detail-hidden")).to_be_hidden()
    row = job_row(page, job_id)
    await expect(row.locator(".job-customer")).to_have_text("acme")
    await expect(anonymous).to_have_count(0)
    job = await broker.get(job_id)
    assert job is not None
    assert job.status == JobStatus.ACTIVE

    # Cancel, with the token remembered: the job ends cancelled in Redis.
    cancel = row.locator("button.cancel")
    await expect(cancel).to_be_enabled()
    await cancel.click()
    await expect(page.locator("#notice")).to_have_text(f"Done: cancel job {job_id}.")
    assert (await finished(broker, job_id)).status == JobStatus.CANCELLED
    await wait_until(lambda: not running.running, message="the worker's slot is free")
    await expect(row).to_have_count(0)
    history = page.locator(f'#history tbody tr[data-job-id="{job_id}"]')
    await expect(history.locator(".badge")).to_have_text("cancelled")
    await expect(page.locator("#status")).to_have_text("idle")
    await assert_not_reloaded(page)

    # A job that loads a model: the capabilities card lists it as warm, live.
    warm = page.locator('#capabilities dt:has-text("Warm models") + dd')
    await expect(warm).to_have_text("none")
    loads = job_request("simulation", payload=sim(steps=1, step_ms=1, models=["sdxl"]))
    loaded_id = (await broker.submit(loads)).job_id
    assert (await finished(broker, loaded_id)).status == JobStatus.COMPLETED
    await expect(warm).to_have_text("sdxl")
    await assert_not_reloaded(page)

    # Nothing secret is shown: the token is only in this tab's sessionStorage.
    assert TOKEN not in await page.content()
    status = await page.request.get(url + "/api/status")
    assert TOKEN not in await status.text()
    tab.problems.assert_clean()


async def test_pause_and_resume_are_refused_without_the_right_token(
    worker: tuple[Worker, str], broker: Broker, redis: Redis, tab: BrowserSession
) -> None:
    running, url = worker
    page = tab.page
    notice = page.locator("#notice")
    await page.goto(url + "/")
    await expect(page.locator("#state")).to_have_text("active")
    await mark_page(page)

    async def state_in_redis() -> bytes | None:
        value = await redis.hget(broker.keys.worker(WORKER_ID), "state")
        assert value is None or isinstance(value, bytes)
        return value

    # No token: the page asks for one and sends nothing.
    await page.locator("#pause").click()
    await expect(notice).to_have_text("Enter the worker's HUB_OPERATOR_TOKEN to pause claiming.")
    await expect(notice).to_have_class("warn")
    assert await state_in_redis() == b"active"

    # A wrong token: the worker refuses it, the page says so and asks again.
    await page.locator("#token").fill("not-the-token")
    await page.locator("#save-token").click()
    await expect(notice).to_have_text("Token refused (wrong token): enter it again.")
    await expect(page.locator("#token-form")).to_be_visible()
    await expect(page.locator("#state")).to_have_text("active")
    assert await state_in_redis() == b"active"
    assert running.state == "active"
    tab.problems.assert_clean(allowed_console=("401",))
    tab.problems.console.clear()

    # The right token: paused, in the page and in the broker's worker hash.
    await page.locator("#token").fill(TOKEN)
    await page.locator("#save-token").click()
    await expect(notice).to_have_text("Done: pause claiming.")
    await expect(notice).to_have_class("ok")
    await expect(page.locator("#state")).to_have_text("paused")
    await expect(page.locator("#pause")).to_be_disabled()
    await expect(page.locator("#resume")).to_be_enabled()
    assert await state_in_redis() == b"paused"

    # A paused worker claims nothing; Resume (token remembered) lets it run the job.
    job_id = (await broker.submit(job_request("simulation", payload=sim()))).job_id
    await page.locator("#resume").click()
    await expect(notice).to_have_text("Done: resume claiming.")
    await expect(page.locator("#state")).to_have_text("active")
    assert await state_in_redis() == b"active"
    assert (await finished(broker, job_id)).status == JobStatus.COMPLETED
    history = page.locator(f'#history tbody tr[data-job-id="{job_id}"]')
    await expect(history.locator(".badge")).to_have_text("completed")
    await expect(page.locator("#success-rate")).to_have_text("100.0%")
    await expect(page.locator("#jobs-count")).to_have_text("1")
    await assert_not_reloaded(page)
    tab.problems.assert_clean()


async def test_without_a_configured_token_the_controls_are_disabled(
    redis_url: str, broker: Broker
) -> None:
    async with (
        worker_with_dashboard(redis_url) as (running, url),
        launch_browser() as browser,
        open_tab(browser) as tab,
    ):
        job_id = (await broker.submit(job_request("simulation", payload=sim(**LONG_JOB)))).job_id
        await wait_until(lambda: job_id in running.running, message="the job is running")
        page = tab.page
        await page.goto(url + "/")
        await expect(page.locator("#controls-disabled")).to_have_text(
            "actions are disabled: HUB_OPERATOR_TOKEN must be set for this worker"
        )
        await expect(page.locator("#pause")).to_be_disabled()
        await expect(page.locator("#resume")).to_be_disabled()
        cancel = job_row(page, "#0").locator("button.cancel")  # the open view names no job
        await expect(cancel).to_be_disabled()
        await page.wait_for_load_state("networkidle")  # and after the script's first refresh
        await expect(cancel).to_be_disabled()
        await expect(page.locator("#pause")).to_be_disabled()
        await running.cancel_job(job_id)  # end it here: the page cannot
        assert (await finished(broker, job_id)).status == JobStatus.CANCELLED
        await wait_until(lambda: not running.running, message="the slot is free")
        tab.problems.assert_clean()
