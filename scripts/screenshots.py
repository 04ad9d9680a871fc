"""The README's dashboard screenshots, taken from a real fleet under a real load.

`.venv/bin/python -m scripts.screenshots [--minutes 12] [--out docs]` starts the demo (hub
with its embedded Redis, the three simulation workers of `python3 dev.py run`) plus one
simulation worker that registers as `comfyui`, submits jobs for `--minutes` in waves (some
failing, some for a service nobody runs, ComfyUI-shaped results with an image), then signs
in to the dashboard in headless Chromium and saves:

- `dashboard.png`: the fleet view, charts included (they show what the run produced);
- `dashboard-job.png`: a finished ComfyUI job: timeline, inline image, payload;
- `dashboard-job-waiting.png`: a queued job no worker can run, and why.

Nothing here is asserted (tests/e2e/test_hub_dashboard_browser.py checks the pages); a
longer run fills more of the charts' hour.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import random
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx

from scripts.demo import ROOT, Demo, free_port, wait_for

# A simulation worker that registers as `comfyui`, next to the demo's three.
COMFY_WORKER = {
    "WORKER_ID": "demo-comfy",
    "SERVICES": "simulation",
    "SIMULATION_SERVICE_NAME": "comfyui",
    "GPU_COUNT": "1",
    "GPU_MEMORY_GB": "24",
    "GPU_MODEL": "NVIDIA GeForce RTX 4090",
    "MODELS": "sdxl",
    "WORKER_ENV_FILE": "/nonexistent/.env.worker",
}


def gradient_png(size: int = 192) -> bytes:
    """A small sunset-coloured PNG (no imaging library): the 'generated image'."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(size):
        rows.append(0)  # no filter
        for x in range(size):
            sun = max(0.0, 1 - math.hypot(x - size * 0.6, y - size * 0.55) / (size * 0.22))
            red = min(255, 90 + y + int(160 * sun))
            green = min(255, 40 + y // 2 + int(140 * sun))
            rows += bytes((red, green, max(0, 140 - y // 2)))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(rows))
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


IMAGE = base64.b64encode(gradient_png()).decode("ascii")
WORKFLOW = {"3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20}},
            "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fox"}}}  # fmt: skip


def comfy_job(n: int) -> dict[str, Any]:
    # The simulation connector echoes `result`: here, what the ComfyUI connector returns.
    image = {"node": "9", "filename": f"fox_{n:05d}_.png", "subfolder": "", "type": "output",
             "content_type": "image/png", "base64": IMAGE}  # fmt: skip
    result = {"prompt_id": f"p-{n}", "images": [image]}
    payload = {"workflow": WORKFLOW, "steps": 6, "step_ms": 400, "result": result}
    return {
        "service_type": "comfyui",
        "priority": 70,
        "customer_id": "studio-42",
        "payload": payload,
    }


def sim_job(rng: random.Random) -> dict[str, Any]:
    payload: dict[str, Any] = {"steps": rng.randint(3, 6), "step_ms": rng.choice((150, 250, 350))}
    doc: dict[str, Any] = {"service_type": "simulation", "priority": rng.choice((10, 50, 50, 80))}
    if rng.random() < 0.06:
        payload.update(fail="CUDA out of memory", fail_at_step=2)
        doc["max_retries"] = 1
    if rng.random() < 0.15:
        doc.update(customer_id="acme", requirements={"customer_isolation": "strict"})
    return {**doc, "payload": payload}


def run_load(demo: Demo, minutes: float, rng: random.Random) -> list[str]:
    """Submit waves of jobs for `minutes`; returns the ids of the ComfyUI jobs."""
    headers = {"Authorization": f"Bearer {demo.client_token}"}
    comfy: list[str] = []
    start = time.monotonic()
    end = start + minutes * 60
    with httpx.Client(base_url=demo.hub_url, headers=headers, timeout=10) as http:
        tick = 0
        while time.monotonic() < end:
            elapsed = time.monotonic() - start
            # Jobs per second in a 5 minute wave whose crest is more than the fleet can take
            # (about 3/s), so queues build up and drain.
            rate = 2.4 + 2.2 * math.sin(2 * math.pi * elapsed / 300)
            jobs = [sim_job(rng) for _ in range(int(rate) + (rng.random() < rate % 1))]
            if tick % 75 == 0:  # a burst of ComfyUI work every 75 s
                jobs += [comfy_job(len(comfy) + i) for i in range(8)]
            if tick % 200 == 30:  # a service nobody runs: these stay queued
                jobs.append({"service_type": "upscale", "payload": {"scale": 4}})
            if jobs:
                answer = http.post("/jobs/batch", json={"jobs": jobs})
                answer.raise_for_status()
                comfy += [j["id"] for j in answer.json()["jobs"] if j["service_type"] == "comfyui"]
            tick += 1
            time.sleep(max(0.0, start + tick - time.monotonic()))
    return comfy


async def capture(demo: Demo, out: Path, comfy_id: str, waiting_id: str, browser: str) -> None:
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=browser, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = await chromium.new_context(viewport={"width": 1360, "height": 1180})
        page = await context.new_page()
        await page.goto(demo.hub_url + "/")
        await page.locator("#token-input").fill(demo.operator_token)
        await page.locator("#token-submit").click()
        await expect(page.locator("#conn-status")).to_have_text("live", timeout=20_000)
        # The live feed keeps the network busy: wait for what the pictures must show.
        await expect(page.locator("#chart-throughput circle").first).to_be_attached(timeout=20_000)
        await expect(page.locator("#workers-table tbody tr")).to_have_count(4, timeout=20_000)
        await page.screenshot(path=str(out / "dashboard.png"))
        shots = {"dashboard-job.png": comfy_id, "dashboard-job-waiting.png": waiting_id}
        for name, job_id in shots.items():
            await page.goto(f"{demo.hub_url}/ui/jobs/{job_id}")
            await expect(page.locator("#job-events li").first).to_be_attached(timeout=20_000)
            await expect(page.locator("#job-service")).not_to_have_text("-", timeout=20_000)
            await page.screenshot(path=str(out / name))
        await chromium.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.screenshots", description=__doc__)
    parser.add_argument("--minutes", type=float, default=12, help="how long to run the load")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go")
    parser.add_argument("--browser", default="/usr/bin/chromium", help="a Chromium executable")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="emp-screenshots-"))
    demo = Demo(workdir=workdir, hub_port=free_port(), ws_port=free_port(), redis_port=free_port())
    try:
        demo.start_hub()
        demo.start_workers()
        redis_url = f"redis://127.0.0.1:{demo.redis_port}/0"
        demo.spawn("demo-comfy", "worker", {"HUB_REDIS_URL": redis_url, **COMFY_WORKER})
        auth = {"Authorization": f"Bearer {demo.operator_token}"}
        with httpx.Client(base_url=demo.hub_url, headers=auth, timeout=10) as operator:

            def registered() -> bool:
                return len(operator.get("/workers").json()["workers"]) == 4

            wait_for(registered, "the comfyui worker to register", 60)
            print(f"screenshots: load for {args.minutes:g} min on {demo.hub_url}", flush=True)
            comfy = run_load(demo, args.minutes, random.Random(7))
            query = {"status": "pending", "service_type": "upscale"}
            waiting = [j["id"] for j in operator.get("/jobs", params=query).json()["jobs"]]
            done = [i for i in comfy if operator.get(f"/jobs/{i}").json()["status"] == "completed"]
        if not (waiting and done):
            raise SystemExit("screenshots: no finished ComfyUI job or no queued one: run longer")
        asyncio.run(capture(demo, args.out, done[-1], waiting[0], args.browser))
        print(f"screenshots: written to {args.out}", flush=True)
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
