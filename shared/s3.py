"""S3-compatible object storage over the httpx client both processes already ship.

Why by hand: the worker needs five S3 calls (HEAD, PUT, and the three of a multipart upload)
and presigned GET URLs, which is AWS Signature Version 4 and nothing else. boto3/aiobotocore
bring botocore (larger than the whole worker.pyz; aiobotocore also brings aiohttp), the minio
SDK brings urllib3 and is synchronous, obstore is a native wheel per platform (it would turn the
one-file pyz into a per-platform build). SigV4 is ~60 lines, specified by AWS, and
tests/unit/test_s3_signing.py holds it to botocore's signer byte for byte.

Credentials come from the standard AWS environment variables or the shared credentials file
(a profile), never from a job; `Credentials.__repr__` hides the secret so a log line cannot
carry it.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

from shared.config import ConfigError
from shared.setting import Setting

ALGORITHM: Final = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_SECONDS: Final = 7 * 24 * 3600  # SigV4's own limit on X-Amz-Expires
BUCKET_PATTERN: Final = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def credentials_from_env(values: Mapping[str, str]) -> Credentials | None:
    """The AWS SDKs' order: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (+AWS_SESSION_TOKEN),
    else the profile AWS_PROFILE (default: "default") of AWS_SHARED_CREDENTIALS_FILE
    (default: ~/.aws/credentials). None when neither holds a key."""
    key, secret = values.get("AWS_ACCESS_KEY_ID"), values.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, values.get("AWS_SESSION_TOKEN") or None)
    path = Path(
        values.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials"
    ).expanduser()
    profile = values.get("AWS_PROFILE") or "default"
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error):
        return None
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not (key and secret):
        return None
    return Credentials(key, secret, section.get("aws_session_token") or None)


@dataclass(frozen=True, slots=True)
class Store:
    """Where objects go: a bucket and key prefix, at an endpoint (AWS's when None)."""

    bucket: str
    prefix: str
    region: str
    endpoint: str | None = None
    path_style: bool = False

    @property
    def name(self) -> str:
        """How messages name the store: its URL and, for non-AWS stores, the endpoint."""
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint}" if self.endpoint else where

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, key: str) -> str:
        """The object's URL; path-style (endpoint/bucket/key) or virtual-hosted
        (bucket.endpoint/key). Path-style is what MinIO and most loopback stores need."""
        base = self.endpoint or f"https://s3.{self.region}.amazonaws.com"
        parts = urlsplit(base)
        path = "/" + quote(key, safe="/-_.~")
        if self.path_style:
            return f"{parts.scheme}://{parts.netloc}/{self.bucket}{path}"
        return f"{parts.scheme}://{self.bucket}.{parts.netloc}{path}"

    @property
    def origin(self) -> str:
        """Scheme and host of the objects' URLs (a dashboard's img-src allows it)."""
        parts = urlsplit(self.url("x"))
        return f"{parts.scheme}://{parts.netloc}"


def parse_store_url(name: str, value: str) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix); a bad value is a ConfigError naming `name`."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", value.strip())
    if match is None or not re.fullmatch(BUCKET_PATTERN, match.group(1)):
        raise ConfigError(name, f"expected s3://<bucket>/<optional prefix>, got {value!r}")
    return match.group(1), match.group(2).strip("/")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(key, region), "s3"), "aws4_request")


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical_query(params: Mapping[str, str]) -> str:
    pairs = sorted((_encode(k), _encode(v)) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def _signature(
    creds: Credentials,
    region: str,
    when: dt.datetime,
    method: str,
    url: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_hash: str,
) -> tuple[str, str]:
    """(signed header names, signature) of one request, per AWS's SigV4 specification."""
    parts = urlsplit(url)
    lowered = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    names = sorted(lowered)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",  # already encoded once by Store.url, as S3 expects
            _canonical_query(query),
            "".join(f"{n}:{lowered[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    date = when.strftime("%Y%m%d")
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            ALGORITHM,
            when.strftime("%Y%m%dT%H%M%SZ"),
            scope,
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ]
    )
    key = _signing_key(creds.secret_key, date, region)
    return ";".join(names), hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_headers(
    creds: Credentials,
    region: str,
    method: str,
    url: str,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    payload_hash: str = UNSIGNED_PAYLOAD,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """The headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256, the session
    token and Authorization. `url` has no query string; `query` holds it."""
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    out = dict(headers or {})
    out["host"] = urlsplit(url).netloc
    out["x-amz-date"] = when.strftime("%Y%m%dT%H%M%SZ")
    out["x-amz-content-sha256"] = payload_hash
    if creds.session_token:
        out["x-amz-security-token"] = creds.session_token
    signed, signature = _signature(creds, region, when, method, url, query or {}, out, payload_hash)
    scope = f"{when:%Y%m%d}/{region}/s3/aws4_request"
    out["Authorization"] = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out


def presign_get(
    creds: Credentials,
    region: str,
    url: str,
    expires: int,
    *,
    now: dt.datetime | None = None,
) -> str:
    """A URL anyone may GET until `expires` seconds from `now` (at most 7 days, SigV4's cap)."""
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"expires must be 1..{MAX_PRESIGN_SECONDS} seconds, got {expires}")
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    query = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{creds.access_key}/{when:%Y%m%d}/{region}/s3/aws4_request",
        "X-Amz-Date": when.strftime("%Y%m%dT%H%M%SZ"),
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    if creds.session_token:
        query["X-Amz-Security-Token"] = creds.session_token
    host = {"host": urlsplit(url).netloc}
    _, signature = _signature(creds, region, when, "GET", url, query, host, UNSIGNED_PAYLOAD)
    return f"{url}?{_canonical_query(query)}&X-Amz-Signature={signature}"


def presigned_expiry(url: str) -> dt.datetime | None:
    """When a URL made by presign_get stops working; None when it is not one."""
    date = re.search(r"[?&]X-Amz-Date=(\d{8}T\d{6}Z)", url)
    expires = re.search(r"[?&]X-Amz-Expires=(\d+)", url)
    if date is None or expires is None:
        return None
    start = dt.datetime.strptime(date.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return start + dt.timedelta(seconds=int(expires.group(1)))


def environ() -> Mapping[str, str]:
    """The process environment, where credentials are read from (tests pass their own)."""
    return os.environ


# --- setting kinds (the worker's OUTPUT_STORE*, the hub's HUB_OUTPUT_STORE*) -------------------


def store_url_setting(name: str, *, doc: str) -> Setting[str | None]:
    """An optional `s3://bucket/prefix`, checked at start-up."""

    def parse(setting: str, value: str) -> str:
        parse_store_url(setting, value)
        return value

    return Setting(name, None, doc, parse)


def endpoint_setting(name: str, *, doc: str) -> Setting[str | None]:
    """An optional http(s) endpoint URL, without its trailing slash."""

    def parse(setting: str, value: str) -> str:
        value = value.rstrip("/")
        if not re.match(r"^https?://[^/\s]+$", value):
            raise ConfigError(setting, f"expected http(s)://host[:port], got {value!r}")
        return value

    return Setting(name, None, doc, parse)
