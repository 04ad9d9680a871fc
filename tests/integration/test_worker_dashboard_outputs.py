"""The worker dashboard shows the images a job stored in the output store: thumbnails in the
job history for an operator, loaded from the store's origin only (the page's CSP names it),
and nothing of them for a reader without the operator's token (the URLs open a customer's
outputs)."""

from __future__ import annotations

import dataclasses

from tests.integration.test_worker_dashboard import TOKEN, FakeWorker, app_client, bearer
from worker.connectors.output_store import stored_image_urls
from worker.job_runner import Outcome

URL = "http://127.0.0.1:9000/emp-outputs/outputs/acme/job-0/0-a.png?X-Amz-Signature=abc"
STORE_ENV = {
    "OUTPUT_STORE": "s3://emp-outputs/outputs",
    "OUTPUT_STORE_ENDPOINT_URL": "http://127.0.0.1:9000",
    "OUTPUT_STORE_PATH_STYLE": "true",
}


def worker_with_a_stored_image() -> FakeWorker:
    fake = FakeWorker()
    fake.settings = dataclasses.replace(fake.settings, env={**fake.settings.env, **STORE_ENV})
    fake.history.appendleft(Outcome("job-0", "completed", None, 1.0, images=(URL,)))
    return fake


async def test_an_operator_sees_the_thumbnails_from_the_store_origin() -> None:
    async with app_client(worker_with_a_stored_image()) as client:
        page = await client.get("/", headers=bearer(TOKEN))
        status = await client.get("/api/status", headers=bearer(TOKEN))
    assert f'<img class="thumb" src="{URL.replace("&", "&amp;")}"' in page.text
    assert "img-src 'self' data: http://127.0.0.1:9000;" in page.headers["content-security-policy"]
    [outcome] = status.json()["history"]
    assert outcome["images"] == [URL]


async def test_without_the_operator_token_no_image_url_is_shown() -> None:
    async with app_client(worker_with_a_stored_image()) as client:
        page = await client.get("/")
        status = await client.get("/api/status")
    assert URL not in page.text
    assert status.json()["history"][0]["images"] == []


async def test_without_a_store_images_load_from_the_dashboard_only() -> None:
    async with app_client(FakeWorker()) as client:
        page = await client.get("/", headers=bearer(TOKEN))
    assert "img-src 'self' data:;" in page.headers["content-security-policy"]


def test_only_stored_images_become_thumbnails() -> None:
    stored = {"url": URL, "key": "k", "sha256": "s", "content_type": "image/png"}
    video = {**stored, "content_type": "video/mp4"}
    inline = {"base64": "iVBOR", "content_type": "image/png"}
    view = {"url": "http://comfy:8188/view?filename=a.png", "content_type": "image/png"}
    assert stored_image_urls({"images": [video, inline, view, stored]}) == (URL,)
    assert stored_image_urls({"images": [stored] * 9}) == (URL,) * 4
    assert stored_image_urls("text") == ()
