"""Fresh URLs for stored job outputs on read.

A worker with OUTPUT_STORE returns each output as `{url, key, bytes, sha256, ...}` where `url`
is a presigned GET that expires (OUTPUT_URL_TTL_SECONDS). The job record keeps that URL, so a
result read the next week would hand out dead links: GET /jobs/{id} replaces a URL that has
expired (or will within REFRESH_MARGIN) with one it signs itself when the hub holds store
credentials (HUB_OUTPUT_STORE_*), and otherwise marks it expired and says how to get the file.
Nothing is written back: the stored record stays what the worker reported.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, Final

from hub.settings import HubSettings
from shared.s3 import (
    Credentials,
    Store,
    credentials_from_env,
    parse_store_url,
    presign_get,
    presigned_expiry,
)

# A URL this close to expiry is replaced too: the client still has to follow it.
REFRESH_MARGIN: Final = dt.timedelta(seconds=60)
MAX_DEPTH: Final = 6  # results are small trees; outputs sit at most a few levels down
NO_CREDENTIALS_NOTE: Final = (
    "the presigned URL expired and this hub has no output-store credentials "
    "(HUB_OUTPUT_STORE_*) to sign a new one: fetch the object by its key"
)


class Signer:
    def __init__(self, store: Store, credentials: Credentials, ttl: int) -> None:
        self.store = store
        self._credentials = credentials
        self.ttl = ttl

    def sign(self, key: str, now: dt.datetime) -> str:
        url = self.store.url(key)
        return presign_get(self._credentials, self.store.region, url, self.ttl, now=now)


def store_of(settings: HubSettings) -> Store | None:
    """HUB_OUTPUT_STORE's bucket and addressing, or None when it is not set."""
    if settings.output_store is None:
        return None
    bucket, _ = parse_store_url("HUB_OUTPUT_STORE", settings.output_store)
    return Store(
        bucket,
        "",
        settings.output_store_region,
        settings.output_store_endpoint,
        settings.output_store_path_style,
    )


def signer_of(settings: HubSettings, env: Mapping[str, str] | None = None) -> Signer | None:
    """The hub's signer, or None without HUB_OUTPUT_STORE or without credentials."""
    store = store_of(settings)
    if store is None:
        return None
    if settings.output_store_access_key and settings.output_store_secret_key:
        credentials: Credentials | None = Credentials(
            settings.output_store_access_key, settings.output_store_secret_key
        )
    else:
        credentials = credentials_from_env(os.environ if env is None else env)
    if credentials is None:
        return None
    return Signer(store, credentials, settings.output_url_ttl)


def store_origin(settings: HubSettings) -> str | None:
    """The origin of HUB_OUTPUT_STORE's URLs (for the dashboard's img-src), or None."""
    store = store_of(settings)
    return None if store is None else store.origin


def refresh_urls(value: Any, signer: Signer | None, now: dt.datetime, depth: int = 0) -> Any:
    """`value` (a job's result) with every expired stored-output URL replaced or flagged."""
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [refresh_urls(item, signer, now, depth + 1) for item in value]
    if not isinstance(value, Mapping):
        return value
    out = {k: refresh_urls(v, signer, now, depth + 1) for k, v in value.items()}
    url, key = out.get("url"), out.get("key")
    if not (isinstance(url, str) and isinstance(key, str) and "sha256" in out):
        return out
    expiry = presigned_expiry(url)
    if expiry is None or expiry - REFRESH_MARGIN > now:
        return out
    if signer is not None:
        out["url"] = signer.sign(key, now)
    else:
        out["url_expired"] = True
        out["note"] = NO_CREDENTIALS_NOTE
    return out
