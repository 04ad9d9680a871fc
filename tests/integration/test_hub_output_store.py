"""The hub dashboard loads result images from the output store the hub signs for
(HUB_OUTPUT_STORE) without the operator listing its origin again, and from nowhere else new."""

from __future__ import annotations

from shared.settings import BrokerSettings
from tests.hub_support import hub_client, hub_settings


async def test_the_dashboard_allows_images_from_the_hubs_output_store(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    settings = hub_settings(
        redis_url,
        broker_settings,
        output_store="s3://emp-outputs/outputs",
        output_store_endpoint="https://acct.r2.cloudflarestorage.com",
        output_store_region="auto",
    )
    async with hub_client(settings) as client:
        page = await client.get("/")
    policy = page.headers["content-security-policy"]
    assert "img-src 'self' data: blob: https://emp-outputs.acct.r2.cloudflarestorage.com;" in policy
    assert "https://emp-outputs.acct.r2.cloudflarestorage.com" in page.text  # dashboard.js's list


async def test_without_a_store_the_dashboard_adds_no_image_origin(
    redis_url: str, broker_settings: BrokerSettings
) -> None:
    async with hub_client(hub_settings(redis_url, broker_settings)) as client:
        page = await client.get("/")
    assert "img-src 'self' data: blob:;" in page.headers["content-security-policy"]
