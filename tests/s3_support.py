"""A real S3-compatible HTTP server on loopback for the output-store tests: moto's standalone
server in a thread of the test process, plus the few calls a test makes to it (make a
bucket, list keys), signed by shared/s3.py like the worker's."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from xml.etree import ElementTree

import httpx
from moto.server import ThreadedMotoServer

from shared.s3 import Credentials, Store, sign_headers

# Distinctive values, so a test can search logs and results for them.
ACCESS_KEY = "AKIATESTOUTPUTSTORE1"
SECRET_KEY = "s3cr3t-Output-Store-Key-never-in-logs"
REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class LoopbackS3:
    endpoint: str
    bucket: str

    @property
    def credentials(self) -> Credentials:
        return Credentials(ACCESS_KEY, SECRET_KEY)

    def env(self, prefix: str = "outputs") -> dict[str, str]:
        """The worker settings that point at this store."""
        return {
            "OUTPUT_STORE": f"s3://{self.bucket}/{prefix}",
            "OUTPUT_STORE_ENDPOINT_URL": self.endpoint,
            "OUTPUT_STORE_REGION": REGION,
            "OUTPUT_STORE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "OUTPUT_STORE_BACKOFF_SECONDS": "0.01",
        }

    def request(
        self, method: str, key: str = "", query: dict[str, str] | None = None
    ) -> httpx.Response:
        url = Store(self.bucket, "", REGION, self.endpoint, True).url(key)
        if not key:
            url = url.rstrip("/")
        headers = sign_headers(
            self.credentials, REGION, method, url, query=query or {},
            payload_hash=hashlib.sha256(b"").hexdigest(),
        )  # fmt: skip
        return httpx.request(method, url, params=query, headers=headers, timeout=10)

    def keys(self, prefix: str = "") -> list[str]:
        """The bucket's keys under `prefix`, sorted."""
        answer = self.request("GET", query={"list-type": "2", "prefix": prefix})
        answer.raise_for_status()
        root = ElementTree.fromstring(answer.content)
        return sorted(e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Key")


@contextmanager
def loopback_s3(bucket: str = "emp-outputs") -> Iterator[LoopbackS3]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        store = LoopbackS3(f"http://{host}:{port}", bucket)
        store.request("PUT").raise_for_status()
        yield store
    finally:
        server.stop()
