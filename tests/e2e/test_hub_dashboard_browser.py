"""The operator dashboard driven like an operator would, in a real headless Chromium.

A real hub (uvicorn on 127.0.0.1, port 0) on the test Redis; workers are simulated through the
Broker API, so each step (claim, progress, completion, failure) happens exactly when the test
says and the page must show it without being reloaded. Skips only when no browser can be found
(see tests/browser_support.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import Broker, Claim
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.browser_support import (
    Browser,
    BrowserSession,
    Locator,
    Page,
    assert_not_reloaded,
    assert_png,
    expect,
    launch_browser,
    mark_page,
    open_tab,
)
from tests.factories import job as job_request
from tests.helpers import wait_until
from tests.hub_support import (
    OPERATOR_TOKEN,
    RunningHub,
    capabilities,
    claim,
    hub_settings,
    running_hub,
    start_worker,
)
from tests.worker_support import status_is

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN_KEY = "emp-operator-token"  # hub/static/dashboard.js
REFUSED = ("401", "WebSocket connection")  # what Chromium logs when the hub refuses a token


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A valid RGB PNG, solid orange, built by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG_B64 = base64.b64encode(tiny_png()).decode("ascii")


@pytest.fixture
def broker_settings() -> BrokerSettings:
    """Production lease times: the simulated workers here do not heartbeat, and nothing may
    expire while the browser looks at them."""
    return BrokerSettings()


@pytest.fixture
async def hub(
    redis_url: str, broker_settings: BrokerSettings, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[RunningHub]:
    caplog.set_level(logging.WARNING, logger="hub.access")  # restored after the test
    async with running_hub(hub_settings(redis_url, broker_settings)) as running:
        yield running


@pytest.fixture
async def browser(hub: RunningHub) -> AsyncIterator[Browser]:
    """Depends on `hub` so that it closes first: no open WebSocket delays the hub's shutdown."""
    async with launch_browser() as launched:
        yield launched


@pytest.fixture
async def tab(browser: Browser) -> AsyncIterator[BrowserSession]:
    async with open_tab(browser) as session:
        yield session


async def sign_in(tab: BrowserSession, hub: RunningHub, token: str = OPERATOR_TOKEN) -> None:
    """Open `/` and enter the operator token in the token form."""
    page = tab.page
    await page.goto(hub.url + "/")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    # Before asking, the page probes `/dashboard/data` without a token (a hub running open
    # needs none); the browser logs the 401 that answers it.
    tab.problems.assert_clean(allowed_console=("401",))
    tab.problems.console.clear()
    await page.locator("#token-input").fill(token)
    await page.locator("#token-submit").click()


async def signed_in(tab: BrowserSession, hub: RunningHub) -> None:
    await sign_in(tab, hub)
    await dashboard_is_live(tab.page)


async def dashboard_is_live(page: Page) -> None:
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.locator("#conn-status")).to_have_text("live")


def live_row(page: Page, job_id: str) -> Locator:
    return page.locator(f'#live-table tbody tr[data-job-id="{job_id}"]')


async def test_operator_signs_in_once_and_sees_the_queue_and_the_workers(
    hub: RunningHub, broker: Broker, tab: BrowserSession, tmp_path: Path
) -> None:
    page = tab.page
    await start_worker(
        broker,
        "gpu-box-1",
        capabilities(
            services=("simulation", "comfyui"),
            gpu_gb=(141.0,),
            warm_models=["flux1-dev.safetensors", "ae.safetensors"],
        ),
    )
    for priority in (90, 80, 10):
        await broker.submit(job_request("simulation", priority=priority))
    await broker.submit(job_request("comfyui", priority=50))

    # A wrong token is refused, and the form asks again.
    await sign_in(tab, hub, "not-the-operator-token")
    await expect(page.locator("#login-error")).to_contain_text("refused")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    tab.problems.assert_clean(allowed_console=REFUSED)
    tab.problems.console.clear()

    await page.locator("#token-input").fill(OPERATOR_TOKEN)
    await page.locator("#token-submit").click()
    await dashboard_is_live(page)

    await expect(page.locator("#stat-pending")).to_have_text("4")
    await expect(page.locator("#stat-workers")).to_have_text("1 (0 busy)")
    # service, total, urgent, high, normal, low
    queue = page.locator("#queue-table tbody tr")
    await expect(queue.filter(has_text="simulation").locator("td")).to_have_text(
        ["simulation", "3", "0", "2", "0", "1"]
    )
    await expect(queue.filter(has_text="comfyui").locator("td")).to_have_text(
        ["comfyui", "1", "0", "0", "1", "0"]
    )
    worker = page.locator('#workers-table tbody tr[data-worker-id="gpu-box-1"]')
    await expect(worker).to_contain_text("simulation, comfyui")
    await expect(worker).to_contain_text("NVIDIA H200 141 GB")
    await expect(worker.locator("td").nth(1)).to_have_text("idle")
    await expect(worker.locator("td").nth(2)).to_have_text("active")
    await expect(worker.locator("td").nth(5)).to_have_text("flux1-dev.safetensors, ae.safetensors")
    await expect(page.locator("#live-table tbody tr")).to_have_count(4)

    # The token is kept for the browser session: a reload does not ask for it again.
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == OPERATOR_TOKEN
    await page.reload()
    await dashboard_is_live(page)
    await expect(page.locator("#stat-pending")).to_have_text("4")
    await expect(page.locator("#token-input")).to_be_hidden()

    shot = tmp_path / "hub-dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert_png(shot)
    tab.problems.assert_clean()

    # "forget token" signs out; the page asks for the token again.
    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


async def test_submit_form_live_progress_and_job_detail_with_image(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    page = tab.page
    caps = await start_worker(broker, "sim-1", capabilities(services=("simulation",)))
    await signed_in(tab, hub)

    # Submit with the form.
    await page.locator("#submit-customer").fill("acme")
    await page.locator("#submit-priority").fill("80")
    await page.locator("#submit-payload").fill(
        '{"steps": 3, "prompt": "a red fox", "models": ["sdxl"]}'
    )
    await page.locator("#submit-button").click()
    await expect(page.locator("#submit-result")).to_contain_text("submitted")
    job_id = await page.locator("#submit-result a.job-link").inner_text()
    job = await broker.get(job_id)
    assert job is not None
    assert (job.status, job.service_type, job.customer_id, job.priority) == (
        JobStatus.PENDING,
        "simulation",
        "acme",
        80,
    )
    assert job.payload == {"steps": 3, "prompt": "a red fox", "models": ["sdxl"]}
    row = live_row(page, job_id)
    await expect(row.locator("td").nth(3)).to_have_text("pending")
    await expect(page.locator("#stat-pending")).to_have_text("1")

    # A worker claims it and reports progress: the row follows, the page is not reloaded.
    await mark_page(page)
    claimed = await claim(broker, "sim-1", caps)
    assert claimed.job.id == job_id
    await expect(row.locator("td").nth(3)).to_have_text("active")
    await expect(row.locator("td").nth(6)).to_have_text("sim-1")
    worker = page.locator('#workers-table tbody tr[data-worker-id="sim-1"]')
    await expect(worker).to_contain_text(job_id)
    for pct in (40, 70):
        await broker.progress("sim-1", job_id, claimed.token, pct, f"step {pct}")
        await expect(row.locator("td").nth(5)).to_have_text(f"{pct}%")
    await assert_not_reloaded(page)

    # The job page: live progress, then the result with its image.
    await row.locator("a.job-link").click()
    await page.wait_for_url(f"**/ui/jobs/{job_id}")
    await expect(page.locator("#app")).to_be_visible()  # the token was not asked again
    await expect(page.locator("#job-status")).to_have_text("active")
    await expect(page.locator("#job-preferred-models")).to_have_text("sdxl")  # from the payload
    await expect(page.locator("#job-progress-text")).to_have_text("70%")
    await expect(page.locator("#conn-status")).to_have_text("live")
    await mark_page(page)
    await broker.progress("sim-1", job_id, claimed.token, 90, "almost there")
    await expect(page.locator("#job-progress-text")).to_have_text("90%")
    await expect(page.locator("#job-message")).to_have_text("almost there")
    assert await page.locator("#job-progress").evaluate("p => p.value") == 90

    # The result in AUTOMATIC1111's shape: {"images": [<base64 PNG>, ...], ...}.
    result = {"images": [PNG_B64], "parameters": {"prompt": "a red fox"}, "seed": 1234}
    await broker.complete("sim-1", job_id, claimed.token, result)
    await expect(page.locator("#job-status")).to_have_text("completed")
    await expect(page.locator("#job-progress-text")).to_have_text("100%")
    await expect(page.locator("#job-result")).to_contain_text('"seed": 1234')
    image = page.locator("#job-images img.result-image")
    await expect(image).to_have_count(1)
    await expect(image).to_have_js_property("complete", True)
    assert await image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [8, 8]
    await assert_not_reloaded(page)
    events = page.locator("#job-events li")
    await expect(events.last).to_contain_text("completed")

    # Back on the dashboard (the header's link) the job is among the recent ones.
    await page.locator("header a.brand").click()
    await page.wait_for_url(hub.url + "/")
    await dashboard_is_live(page)
    recent = page.locator("#recent-table tbody tr", has_text=job_id)
    await expect(recent.locator("td").nth(3)).to_have_text("completed")
    await expect(recent.locator("td").nth(5)).to_have_text("sim-1")
    await expect(live_row(page, job_id)).to_have_count(0)
    tab.problems.assert_clean()


async def test_failed_jobs_are_listed_and_retried_from_the_dashboard(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    page = tab.page
    caps = await start_worker(broker, "sim-1", capabilities(services=("simulation",)))
    failed_ids = []
    for error in ("CUDA out of memory", "model not found"):
        job_id = (await broker.submit(job_request("simulation", max_retries=0))).job_id
        claimed = await claim(broker, "sim-1", caps)
        assert await broker.fail("sim-1", job_id, claimed.token, error) == "failed"
        failed_ids.append(job_id)
    oom, missing = failed_ids

    await signed_in(tab, hub)
    await mark_page(page)
    failed_rows = page.locator("#failed-table tbody tr")
    await expect(failed_rows).to_have_count(2)
    row = failed_rows.filter(has_text=oom)
    await expect(row).to_contain_text("CUDA out of memory")

    # Retry from the failed-jobs table: the job is pending again, and the lists follow.
    await row.locator(f'button.retry-btn[data-job-id="{oom}"]').click()
    await status_is(broker, oom, JobStatus.PENDING)
    await expect(failed_rows).to_have_count(1)
    await expect(failed_rows.filter(has_text=oom)).to_have_count(0)
    await expect(live_row(page, oom).locator("td").nth(3)).to_have_text("pending")
    await expect(page.locator("#stat-pending")).to_have_text("1")
    await assert_not_reloaded(page)

    # Retry from the job page.
    await page.goto(f"{hub.url}/ui/jobs/{missing}")
    await expect(page.locator("#job-status")).to_have_text("failed")
    await expect(page.locator("#job-error")).to_have_text("model not found")
    await page.locator("#job-retry").click()
    await expect(page.locator("#job-status")).to_have_text("pending")
    await status_is(broker, missing, JobStatus.PENDING)
    tab.problems.assert_clean()


async def complete_a_job(broker: Broker, result: dict[str, Any]) -> str:
    caps = await start_worker(broker, "sim-1", capabilities(services=("simulation",)))
    job_id = (await broker.submit(job_request("simulation"))).job_id
    claimed = await claim(broker, "sim-1", caps)
    await broker.complete("sim-1", job_id, claimed.token, result)
    return job_id


async def test_job_page_shows_the_images_of_a_comfyui_result(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    image = {"node": "9", "filename": "fox_00001_.png", "subfolder": "", "type": "output"}
    result = {
        "prompt_id": "p-1",
        "images": [{**image, "content_type": "image/png", "base64": PNG_B64}],
    }
    job_id = await complete_a_job(broker, result)
    await signed_in(tab, hub)
    page = tab.page
    await page.goto(f"{hub.url}/ui/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("completed")
    await expect(page.locator("#job-result")).to_contain_text("fox_00001_.png")
    # renderJob() fills the result and the images in one go: no need to wait longer.
    await expect(page.locator("#job-images img.result-image")).to_have_count(1, timeout=500)


async def test_back_to_the_dashboard_shows_the_current_state(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    page = tab.page
    caps = await start_worker(broker, "sim-1", capabilities(services=("simulation",)))
    job_id = (await broker.submit(job_request("simulation"))).job_id
    claimed = await claim(broker, "sim-1", caps)
    await signed_in(tab, hub)
    await expect(live_row(page, job_id).locator("td").nth(3)).to_have_text("active")
    await live_row(page, job_id).locator("a.job-link").click()
    await page.wait_for_url(f"**/ui/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("active")
    await broker.complete("sim-1", job_id, claimed.token, {"ok": True})
    await expect(page.locator("#job-status")).to_have_text("completed")
    await page.go_back()
    await dashboard_is_live(page)
    await page.wait_for_load_state("networkidle")  # the page's own refresh() has been answered
    await expect(page.locator("#stat-active")).to_have_text("0", timeout=500)
    await expect(live_row(page, job_id)).to_have_count(0, timeout=500)


@contextlib.asynccontextmanager
async def image_server() -> AsyncIterator[tuple[str, list[str]]]:
    """An origin of its own on 127.0.0.1 that answers every GET with a PNG and records the
    request lines it got: a tracker or an output store, to the browser."""
    seen: list[str] = []
    png = tiny_png()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n"
                     b"content-length: " + str(len(png)).encode() + b"\r\n\r\n" + png)  # fmt: skip
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


async def test_result_images_load_only_from_the_hub_and_the_output_store(
    redis_url: str, broker: Broker
) -> None:
    """Attack: a job's result names an image on a server the attacker watches; the
    operator's dashboard loaded any image URL found in a result, telling that server when,
    and from where, an operator looked. Refused: only images of the hub's own origin and of
    the configured output store (HUB_DASHBOARD_IMAGE_ORIGINS) are shown inline; the page's
    CSP `img-src` allows those and nothing else, so the tracker gets no request."""
    async with (
        image_server() as (tracker, tracked),
        image_server() as (store, stored),
    ):
        settings = hub_settings(redis_url, BrokerSettings(), dashboard_image_origins=(store,))
        async with running_hub(settings) as hub, launch_browser() as browser:
            # ComfyUI outputs past the worker's inline budget are references to /view.
            refs = [{"filename": name, "content_type": "image/png", "url": f"{origin}/view?filename={name}"}
                    for origin, name in ((store, "big.png"), (tracker, "spy.png"))]  # fmt: skip
            result = {"images": [f"{tracker}/pixel.png?who=operator", f"{store}/out/fox.png",
                                 f"{hub.url}/static/fox.png"], "outputs": refs}  # fmt: skip
            job_id = await complete_a_job(broker, result)
            async with open_tab(browser) as tab:
                await signed_in(tab, hub)
                page = tab.page
                response = await page.goto(f"{hub.url}/ui/jobs/{job_id}")
                assert response is not None
                csp = response.headers["content-security-policy"]
                img_src = next(d for d in csp.split(";") if d.strip().startswith("img-src"))
                assert img_src.split() == ["img-src", "'self'", "data:", "blob:", store]
                await expect(page.locator("#job-status")).to_have_text("completed")
                images = page.locator("#job-images img.result-image")
                await expect(images).to_have_count(3)
                sources = await images.evaluate_all("imgs => imgs.map(i => i.src)")
                assert sources == [f"{store}/out/fox.png", f"{hub.url}/static/fox.png",
                                   f"{store}/view?filename=big.png"]  # fmt: skip
                await expect(images.first).to_have_js_property("complete", True)
                await expect(images.last).to_have_js_property("complete", True)
                assert sorted(stored) == ["GET /out/fox.png HTTP/1.1",
                                          "GET /view?filename=big.png HTTP/1.1"]  # fmt: skip
                assert tracked == []
                # The page says which origin it refused, as text.
                await expect(page.locator("#job-images-blocked")).to_contain_text(tracker)
                # The hub has no fox.png: the browser logs that 404, nothing else.
                tab.problems.assert_clean(allowed_console=("404",))


async def drawn(page: Page, chart: str, series: str) -> list[int]:
    """The values of the points chart `chart` draws for `series` (charts.js puts each one in
    data-value): what the chart says, read without looking at pixels."""
    values = await page.locator(f'#{chart} circle[data-series="{series}"]').evaluate_all(
        "points => points.map(p => Number(p.dataset.value))"
    )
    return [int(v) for v in values]


async def test_charts_draw_the_last_hour_from_real_jobs_and_follow_live(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    page = tab.page
    caps = await start_worker(broker, "sim-1", capabilities(services=("simulation",)))
    for _ in range(4):
        await broker.submit(job_request("simulation", max_retries=0))
    for outcome in ("complete", "complete", "fail"):
        got = await claim(broker, "sim-1", caps)
        if outcome == "complete":
            await broker.complete("sim-1", got.job.id, got.token, {"ok": True})
        else:
            await broker.fail("sim-1", got.job.id, got.token, "CUDA out of memory")

    await signed_in(tab, hub)
    # Sums, not single points: the jobs may straddle a minute boundary.
    await wait_until(lambda: _sum_is(page, "chart-throughput", "submitted", 4))
    assert sum(await drawn(page, "chart-throughput", "completed")) == 2
    assert sum(await drawn(page, "chart-throughput", "failed")) == 1
    assert len(await drawn(page, "chart-wait", "wait p50")) >= 1
    assert len(await drawn(page, "chart-wait", "wait p95")) >= 1
    assert (await drawn(page, "chart-depth", "simulation"))[-1] == 1  # the queued one, now
    await expect(page.locator("#chart-throughput .legend")).to_contain_text(
        "completed 2 in the hour"
    )
    axis = page.locator("#chart-throughput svg text.tick.y")
    await expect(axis.first).to_have_text("0")

    # The fourth job runs while the operator watches: the charts follow without a reload.
    await mark_page(page)
    got = await claim(broker, "sim-1", caps)
    await broker.complete("sim-1", got.job.id, got.token, {"ok": True})
    await wait_until(lambda: _sum_is(page, "chart-throughput", "completed", 3), timeout=15)
    # Its queue is empty now; with no sampled minute behind it (no maintenance runs here)
    # the service's line goes with it.
    await wait_until(lambda: _no_point(page, "chart-depth", "simulation"), timeout=15)
    await assert_not_reloaded(page)
    tab.problems.assert_clean()


async def _sum_is(page: Page, chart: str, series: str, total: int) -> bool:
    return sum(await drawn(page, chart, series)) == total


async def _no_point(page: Page, chart: str, series: str) -> bool:
    return not await drawn(page, chart, series)


async def test_job_page_shows_why_a_job_waits_and_its_timeline_live(
    hub: RunningHub, broker: Broker, tab: BrowserSession
) -> None:
    page = tab.page
    caps = await start_worker(broker, "w1", capabilities(services=("simulation",), gpu_gb=(24.0,)))
    await start_worker(broker, "w2", capabilities(services=("simulation",), gpu_gb=(24.0,)))
    big = {"hardware": {"gpu": {"memory_gb": 80}}}
    stuck = (await broker.submit(job_request("simulation", requirements=big))).job_id

    # The queued-jobs table says why, in words.
    await signed_in(tab, hub)
    why = live_row(page, stuck).locator("td").nth(7)
    await expect(why).to_have_text(
        "no worker offers service 'simulation' that can run it: needs 1 GPU(s) >= 80 GB "
        "(2 of 2 offering it)"
    )
    await live_row(page, stuck).locator("a.job-link").click()
    await page.wait_for_url(f"**/ui/jobs/{stuck}")
    await expect(page.locator("#job-waiting-box")).to_be_visible()
    await expect(page.locator("#job-waiting")).to_contain_text("needs 1 GPU(s) >= 80 GB")
    await expect(page.locator("#job-waiting-detail")).to_contain_text("2 live, 2 offering")
    await expect(page.locator("#job-events li")).to_have_count(1)
    await expect(page.locator("#job-events li .what")).to_have_text("queued")

    # A job that fails once on w1, then runs on w2: the page was opened before its claim.
    job_id = (
        await broker.submit(job_request("simulation", max_retries=1, payload={"prompt": "a fox"}))
    ).job_id
    await page.goto(f"{hub.url}/ui/jobs/{job_id}")
    await expect(page.locator("#job-waiting")).to_contain_text("capable worker(s) idle")
    await expect(page.locator("#job-payload")).to_contain_text('"prompt": "a fox"')
    await mark_page(page)
    first = await claim(broker, "w1", caps)
    await broker.progress("w1", job_id, first.token, 40, "step 2/5")
    assert await broker.fail("w1", job_id, first.token, "CUDA out of memory") == "retrying"

    async def claimed_by_w2() -> Claim | None:
        got = await broker.claim("w2", caps)
        return got if isinstance(got, Claim) else None

    second = await wait_until(claimed_by_w2, timeout=15, message="w2 claimed the retry")
    await broker.progress("w2", job_id, second.token, 50, "step 3/6")
    await broker.progress("w2", job_id, second.token, 100, "step 6/6")
    await broker.complete("w2", job_id, second.token, {"seed": 7})
    await expect(page.locator("#job-status")).to_have_text("completed")
    await expect(page.locator("#job-waiting-box")).to_be_hidden()
    rows = page.locator("#job-events li")
    await expect(rows.locator(".what")).to_have_text(
        ["queued", "claimed", "progress", "failed, will retry", "claimed", "progress", "completed"]
    )
    await expect(rows.locator(".who")).to_have_text(["", "w1", "w1", "w1", "w2", "w2", "w2"])
    await expect(rows.nth(3).locator(".detail")).to_contain_text("attempt 1 after")
    await expect(rows.nth(3).locator(".detail")).to_contain_text("CUDA out of memory")
    await expect(rows.nth(5).locator(".detail")).to_have_text("50% -> 100% - step 6/6 (2 updates)")
    await expect(rows.nth(6).locator(".detail")).to_contain_text("ran ")
    await assert_not_reloaded(page)

    # Read back from the stream after a reload: the same timeline.
    await page.reload()
    await expect(rows.locator(".what")).to_have_text(
        ["queued", "claimed", "progress", "failed, will retry", "claimed", "progress", "completed"]
    )
    tab.problems.assert_clean()
