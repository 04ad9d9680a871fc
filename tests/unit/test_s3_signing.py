"""shared/s3.py's SigV4 signing agrees with botocore's (the reference the AWS SDKs use) for
headers-signed requests and presigned GET URLs, over keys with characters that need encoding."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import ConfigError
from shared.s3 import (
    Credentials,
    Store,
    credentials_from_env,
    parse_store_url,
    presign_get,
    presigned_expiry,
    sign_headers,
)

NOW = dt.datetime(2026, 12, 5, 20, 1, 2, tzinfo=dt.UTC)
KEYS = [
    "outputs/cust-1/job-1/0-ComfyUI_00001_.png",
    "p/c/j/1-name with spaces & (brackets)+plus=é.png",
    "p/c/j/2-~tilde_under.score-dash",
]


def store(path_style: bool = True) -> Store:
    endpoint = "http://127.0.0.1:9000" if path_style else None
    return Store("bucket-1", "outputs", "eu-central-1", endpoint, path_style)


def creds(token: str | None = None) -> Credentials:
    return Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)


@pytest.fixture(autouse=True)
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore reads the clock itself; both sides must sign the same instant.
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))


def boto_creds(c: Credentials) -> BotoCredentials:
    return BotoCredentials(c.access_key, c.secret_key, c.session_token)


@pytest.mark.parametrize("token", [None, "session-token/+="])
@pytest.mark.parametrize("path_style", [True, False])
@pytest.mark.parametrize("key", KEYS)
def test_presigned_get_matches_botocore(key: str, path_style: bool, token: str | None) -> None:
    url = store(path_style).url(key)
    ours = presign_get(creds(token), "eu-central-1", url, 3600, now=NOW)

    request = AWSRequest(method="GET", url=url)
    botocore.auth.S3SigV4QueryAuth(boto_creds(creds(token)), "s3", "eu-central-1", 3600).add_auth(
        request
    )
    theirs = request.url
    assert urlsplit(ours).path == urlsplit(theirs).path
    assert dict(parse_qsl(urlsplit(ours).query)) == dict(parse_qsl(urlsplit(theirs).query))
    assert presigned_expiry(ours) == NOW + dt.timedelta(hours=1)


@pytest.mark.parametrize("token", [None, "tok"])
@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("PUT", {}),
        ("POST", {"uploads": ""}),
        ("PUT", {"partNumber": "2", "uploadId": "a/b+c=="}),
    ],
)
def test_header_signature_matches_botocore(
    method: str, query: dict[str, str], token: str | None
) -> None:
    url = store().url(KEYS[1])
    body = b"1234567"
    body_hash = hashlib.sha256(body).hexdigest()
    ours = sign_headers(
        creds(token),
        "eu-central-1",
        method,
        url,
        query=query,
        headers={"content-type": "image/png", "content-length": "7"},
        payload_hash=body_hash,
        now=NOW,
    )
    full_url = url + ("?" + urlencode(query, quote_via=quote, safe="") if query else "")
    request = AWSRequest(
        method=method,
        url=full_url,
        headers={
            "content-type": "image/png",
            "content-length": "7",
        },
        data=body,
    )
    botocore.auth.S3SigV4Auth(boto_creds(creds(token)), "s3", "eu-central-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=40))
def test_any_file_name_signs_like_botocore(name: str) -> None:
    url = store().url(f"p/c/j/0-{name}")
    ours = presign_get(creds(), "us-east-1", url, 60, now=NOW)
    request = AWSRequest(method="GET", url=url)
    botocore.auth.S3SigV4QueryAuth(boto_creds(creds()), "s3", "us-east-1", 60).add_auth(request)
    assert dict(parse_qsl(urlsplit(ours).query)) == dict(parse_qsl(urlsplit(request.url).query))


def test_the_secret_never_shows_in_repr() -> None:
    text = repr(creds("the-session-token"))
    assert "AKIDEXAMPLE" in text
    assert "wJalr" not in text
    assert "the-session-token" not in text


def test_credentials_come_from_env_first_then_the_profile(tmp_path: Path) -> None:
    shared = tmp_path / "credentials"
    shared.write_text(
        "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n"
        "[ops]\naws_access_key_id = O\naws_secret_access_key = OS\naws_session_token = OT\n"
    )
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(shared)}
    assert credentials_from_env(
        {**env, "AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "ES"}
    ) == Credentials("E", "ES")
    assert credentials_from_env(env) == Credentials("D", "DS")
    assert credentials_from_env({**env, "AWS_PROFILE": "ops"}) == Credentials("O", "OS", "OT")
    assert credentials_from_env({**env, "AWS_PROFILE": "missing"}) is None
    assert credentials_from_env({"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://bucket-1", ("bucket-1", "")),
        ("s3://bucket-1/", ("bucket-1", "")),
        ("s3://bucket-1/a/b/", ("bucket-1", "a/b")),
    ],
)
def test_store_urls_parse(value: str, expected: tuple[str, str]) -> None:
    assert parse_store_url("OUTPUT_STORE", value) == expected


@pytest.mark.parametrize("value", ["bucket", "http://b/p", "s3://", "s3://UPPER/p", "s3://a/p"])
def test_bad_store_urls_name_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="OUTPUT_STORE"):
        parse_store_url("OUTPUT_STORE", value)


def test_object_urls_are_path_style_or_virtual_hosted() -> None:
    assert store(True).url("outputs/a b.png") == "http://127.0.0.1:9000/bucket-1/outputs/a%20b.png"
    assert store(False).url("k") == "https://bucket-1.s3.eu-central-1.amazonaws.com/k"
    assert store().key("c", "j", "0-x.png") == "outputs/c/j/0-x.png"
