"""GET /jobs/{id}'s treatment of stored outputs (hub/output_urls.py): an expired presigned URL
is re-signed when the hub holds store credentials, flagged with the key otherwise; live URLs
and anything that is not a stored output are left as they are."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hub.output_urls import NO_CREDENTIALS_NOTE, Signer, refresh_urls, signer_of
from shared.s3 import Credentials, Store, presign_get, presigned_expiry
from tests.hub_support import hub_settings

NOW = dt.datetime(2026, 12, 5, 20, 0, tzinfo=dt.UTC)
STORE = Store("emp-outputs", "", "us-east-1", "http://127.0.0.1:9000", True)
CREDS = Credentials("AKIAHUB", "hub-secret")
KEY = "outputs/cust-1/job-1/0-a.png"


def output(signed_at: dt.datetime, ttl: int) -> dict[str, Any]:
    url = presign_get(CREDS, "us-east-1", STORE.url(KEY), ttl, now=signed_at)
    return {"url": url, "key": KEY, "bytes": 3, "sha256": "ab", "content_type": "image/png"}


def result(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_id": "p",
        "images": [entry],
        "outputs": {"3": {"images": [{"filename": "a.png"}]}},
    }


def test_an_expired_url_is_signed_again_for_the_hubs_ttl() -> None:
    stale = output(NOW - dt.timedelta(days=2), 3600)
    refreshed = refresh_urls(result(stale), Signer(STORE, CREDS, 900), NOW)
    [image] = refreshed["images"]
    assert image["url"] != stale["url"]
    assert presigned_expiry(image["url"]) == NOW + dt.timedelta(seconds=900)
    assert urlsplit(image["url"]).path == "/emp-outputs/" + KEY
    assert {k: v for k, v in image.items() if k != "url"} == {
        k: v for k, v in stale.items() if k != "url"
    }


def test_a_url_about_to_expire_counts_as_expired() -> None:
    closing = output(NOW - dt.timedelta(seconds=3570), 3600)  # 30 s left
    [image] = refresh_urls(result(closing), Signer(STORE, CREDS, 900), NOW)["images"]
    assert parse_qs(urlsplit(image["url"]).query)["X-Amz-Expires"] == ["900"]


def test_a_live_url_and_other_values_are_left_alone() -> None:
    live = result(output(NOW, 3600))
    assert refresh_urls(live, Signer(STORE, CREDS, 900), NOW) == live
    inline = {"images": [{"url": "http://comfy/view?filename=a.png", "bytes": 3}]}
    assert refresh_urls(inline, None, NOW) == inline


def test_without_credentials_the_key_is_returned_and_the_expiry_said() -> None:
    stale = output(NOW - dt.timedelta(days=2), 3600)
    [image] = refresh_urls(result(stale), None, NOW)["images"]
    assert image["url"] == stale["url"]
    assert image["key"] == KEY
    assert image["url_expired"] is True
    assert image["note"] == NO_CREDENTIALS_NOTE


def test_the_hub_signs_only_with_a_store_and_credentials() -> None:
    base = hub_settings("redis://127.0.0.1:6379/0")
    assert signer_of(base, {}) is None
    with_store = hub_settings("redis://127.0.0.1:6379/0", output_store="s3://emp-outputs/outputs")
    assert signer_of(with_store, {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}) is None
    from_env = signer_of(with_store, {"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "S"})
    assert from_env is not None
    assert from_env.store.bucket == "emp-outputs"
    explicit = hub_settings(
        "redis://127.0.0.1:6379/0",
        output_store="s3://emp-outputs",
        output_store_access_key="H",
        output_store_secret_key="HS",
    )
    signer = signer_of(explicit, {})
    assert signer is not None
    assert "Credential=H%2F" in signer.sign(KEY, NOW)
    assert "HS" not in repr(explicit)
