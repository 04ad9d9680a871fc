"""Job outputs to S3-compatible object storage, handed back as presigned GET URLs.

GPU boxes sit in private networks and ComfyUI overwrites its outputs, so a URL to the box is
no use to a customer, and multi-megabyte files inline bloat Redis and every reader of the job.
With OUTPUT_STORE set, the ComfyUI and A1111 connectors put every output file under
`{prefix}/{customer}/{job_id}/{n}-{name}` and the result lists
`{url, key, bytes, sha256, content_type}` (+ width, height for images).

- Streamed: a file is read in parts of OUTPUT_STORE_PART_BYTES; one part is one PUT, more
  are a multipart upload, so memory holds at most two parts whatever the file's size.
- Retried: each request is retried with exponential backoff on connection errors, 5xx and
  429; a refusal (403, 404 NoSuchBucket) is final. A file that still fails fails the job,
  retryably, with a message naming the store and the file.
- Idempotent: keys are deterministic, and before uploading a key that already exists the
  file is hashed (read from the local service, not sent) and compared with the stored ETag:
  the next attempt of a job re-sends nothing that already arrived.

Signing is shared/s3.py's (why not boto3 & co: see there). Credentials come from the standard
AWS variables or profile; they are never logged and never part of a result.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree import ElementTree

import httpx

from shared.config import ConfigError
from shared.s3 import (
    MAX_PRESIGN_SECONDS,
    Credentials,
    Store,
    credentials_from_env,
    endpoint_setting,
    parse_store_url,
    presign_get,
    sign_headers,
    store_url_setting,
)
from shared.setting import flag, integer, number, text
from shared.setting_section import Section
from worker.connectors.base import JobFailed

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
MIN_PART: Final = 5 * MIB  # S3's least size of a multipart part (but the last)
READ_CHUNK: Final = 256 * 1024
RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
NO_CUSTOMER: Final = "_"  # the customer segment of keys of jobs submitted without one

OUTPUTS = Section(
    "output store: ComfyUI and A1111 outputs to S3-compatible storage (S3, R2, MinIO ...)",
    note="Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)\n"
    "or AWS_PROFILE in the shared credentials file, as for the AWS CLI; never from a job.",
)


OUTPUT_STORE: Final = OUTPUTS.add(
    store_url_setting(
        "OUTPUT_STORE",
        doc="Where outputs go, s3://<bucket>/<prefix>; empty: outputs are returned inline or "
        "as URLs of the local service",
    )
)
OUTPUT_STORE_ENDPOINT_URL: Final = OUTPUTS.add(
    endpoint_setting(
        "OUTPUT_STORE_ENDPOINT_URL",
        doc="The store's endpoint for R2, MinIO and the like, e.g. "
        "https://<account>.r2.cloudflarestorage.com; empty: AWS S3",
    )
)
OUTPUT_STORE_REGION: Final = OUTPUTS.add(
    text("OUTPUT_STORE_REGION", "us-east-1", doc="The bucket's region (R2: auto)")
)
OUTPUT_STORE_PATH_STYLE: Final = OUTPUTS.add(
    flag(
        "OUTPUT_STORE_PATH_STYLE",
        False,
        doc="Address objects as <endpoint>/<bucket>/<key> (MinIO needs it) instead of "
        "<bucket>.<endpoint>/<key>",
    )
)
OUTPUT_URL_TTL_SECONDS: Final = OUTPUTS.add(
    integer(
        "OUTPUT_URL_TTL_SECONDS",
        86400,
        lo=1,
        hi=MAX_PRESIGN_SECONDS,
        doc="How long the presigned GET URLs in results stay valid (at most 7 days)",
    )
)
OUTPUT_INLINE_MAX_BYTES: Final = OUTPUTS.add(
    integer(
        "OUTPUT_INLINE_MAX_BYTES",
        0,
        lo=0,
        doc="With a store: output bytes per job also returned inline (base64), besides the URL",
    )
)
OUTPUT_STORE_PART_BYTES: Final = OUTPUTS.add(
    integer(
        "OUTPUT_STORE_PART_BYTES",
        8 * MIB,
        lo=MIN_PART,
        hi=1024 * MIB,
        doc="Files larger than this are sent as a multipart upload in parts of this size",
    )
)
OUTPUT_STORE_ATTEMPTS: Final = OUTPUTS.add(
    integer(
        "OUTPUT_STORE_ATTEMPTS",
        4,
        lo=1,
        hi=20,
        doc="Tries of each request to the store (backoff doubles between them) before the "
        "job fails, retryably",
    )
)
OUTPUT_STORE_TIMEOUT_SECONDS: Final = OUTPUTS.add(
    number(
        "OUTPUT_STORE_TIMEOUT_SECONDS",
        60.0,
        lo=0.1,
        doc="Timeout of each HTTP request to the store",
    )
)
OUTPUT_STORE_BACKOFF_SECONDS: Final = OUTPUTS.add(
    number(
        "OUTPUT_STORE_BACKOFF_SECONDS",
        0.5,
        lo=0,
        hi=60,
        doc="Wait before the second try of a request; doubled before each further one",
    )
)


class StoreError(Exception):
    """A request to the store failed for good (after its retries, or refused)."""


@dataclass(slots=True)
class Digest:
    """What is known of a file once read: size, sha256, and the ETag S3 gives it when it is
    sent in parts of `part_size` (MD5 of one part; MD5 of the parts' MD5s + "-n" for more)."""

    part_size: int
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    part_md5s: list[bytes] = field(default_factory=list)
    head: bytes = b""  # the first bytes, for the content sniffers

    def add_part(self, part: bytes) -> None:
        if not self.head:
            self.head = part[:65536]
        self.size += len(part)
        self.sha256.update(part)
        self.part_md5s.append(hashlib.md5(part, usedforsecurity=False).digest())

    @property
    def etag(self) -> str:
        if len(self.part_md5s) <= 1:
            only = self.part_md5s[0] if self.part_md5s else hashlib.md5(b"").digest()
            return only.hex()
        joined = hashlib.md5(b"".join(self.part_md5s), usedforsecurity=False).hexdigest()
        return f"{joined}-{len(self.part_md5s)}"


@dataclass(frozen=True, slots=True)
class Stored:
    """One output in the store; `data` holds the bytes of a single-part file (for inlining)."""

    key: str
    size: int
    sha256: str
    content_type: str
    width: int | None
    height: int | None
    data: bytes | None
    reused: bool  # already in the store from an earlier attempt: nothing was sent


Source = Callable[[], AsyncIterator[bytes]]


class OutputStore:
    def __init__(
        self,
        store: Store,
        credentials: Credentials,
        *,
        ttl: int,
        inline_max: int,
        part_size: int,
        attempts: int,
        timeout: float,
        backoff: float,
    ) -> None:
        self.store = store
        self._credentials = credentials
        self.ttl = ttl
        self.inline_max = inline_max
        self.part_size = part_size
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OutputStore | None:
        """None without OUTPUT_STORE; a ConfigError for a store without credentials."""
        url = OUTPUT_STORE.read(env)
        if url is None:
            return None
        bucket, prefix = parse_store_url(OUTPUT_STORE.name, url)
        credentials = credentials_from_env(env)
        if credentials is None:
            raise ConfigError(
                OUTPUT_STORE.name,
                "needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE (a profile in ~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE)",
            )
        return cls(
            _store(env, bucket, prefix),
            credentials,
            ttl=OUTPUT_URL_TTL_SECONDS.read(env),
            inline_max=OUTPUT_INLINE_MAX_BYTES.read(env),
            part_size=OUTPUT_STORE_PART_BYTES.read(env),
            attempts=OUTPUT_STORE_ATTEMPTS.read(env),
            timeout=OUTPUT_STORE_TIMEOUT_SECONDS.read(env),
            backoff=OUTPUT_STORE_BACKOFF_SECONDS.read(env),
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def key_for(self, customer: str | None, job_id: str, n: int, name: str) -> str:
        return self.store.key(
            _segment(customer or NO_CUSTOMER), _segment(job_id), f"{n}-{_segment(name)}"
        )

    def presign(self, key: str) -> str:
        return presign_get(self._credentials, self.store.region, self.store.url(key), self.ttl)

    def describe(self, stored: Stored) -> dict[str, Any]:
        """The result entry of one stored output."""
        entry: dict[str, Any] = {
            "url": self.presign(stored.key),
            "key": stored.key,
            "bytes": stored.size,
            "sha256": stored.sha256,
            "content_type": stored.content_type,
        }
        if stored.width is not None and stored.height is not None:
            entry.update(width=stored.width, height=stored.height)
        return entry

    def failure(self, name: str, exc: Exception) -> JobFailed:
        return JobFailed(
            f"could not store output {name!r} in {self.store.name}: {exc}",
            retryable=True,
            details={"store": self.store.name, "file": name},
        )

    # --- one file --------------------------------------------------------------------------

    async def put(self, key: str, source: Source, content_type: str) -> Stored:
        """Store what `source()` yields under `key` (a second call of `source` re-reads it)."""
        etag = await self._head_etag(key)
        if etag is not None:
            digest = Digest(self.part_size)
            async with contextlib.aclosing(_parts(source(), self.part_size)) as parts:
                async for part in parts:
                    digest.add_part(part)
            if digest.etag == etag:
                log.info("output %s is already in the store; not sent again", key)
                return _stored(key, digest, content_type, None, reused=True)
        digest = Digest(self.part_size)
        async with contextlib.aclosing(_parts(source(), self.part_size)) as parts:
            first = await anext(parts, b"")
            second = await anext(parts, None)
            if second is None:
                digest.add_part(first)
                await self._send("PUT", key, {}, first, {"content-type": content_type}, expect=200)
                return _stored(key, digest, content_type, first, reused=False)
            await self._multipart(key, content_type, digest, first, second, parts)
        return _stored(key, digest, content_type, None, reused=False)

    async def _multipart(
        self,
        key: str,
        content_type: str,
        digest: Digest,
        first: bytes,
        second: bytes,
        rest: AsyncIterator[bytes],
    ) -> None:
        created = await self._send(
            "POST", key, {"uploads": ""}, b"", {"content-type": content_type}, expect=200
        )
        upload_id = _xml_text(created.content, "UploadId")
        etags: list[str] = []
        try:

            async def send(part: bytes) -> None:
                digest.add_part(part)
                query = {"partNumber": str(len(etags) + 1), "uploadId": upload_id}
                answer = await self._send("PUT", key, query, part, {}, expect=200)
                etags.append(answer.headers.get("etag", ""))

            await send(first)
            await send(second)
            async for part in rest:
                await send(part)
            body = "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
                for n, etag in enumerate(etags, 1)
            )
            xml = f"<CompleteMultipartUpload>{body}</CompleteMultipartUpload>".encode()
            done = await self._send("POST", key, {"uploadId": upload_id}, xml, {}, expect=200)
            if b"<Error>" in done.content:  # S3 may answer 200 and an error in the body
                raise StoreError(f"completing the multipart upload failed: {done.text[:300]}")
        except BaseException:
            with contextlib.suppress(Exception):
                await self._once("DELETE", key, {"uploadId": upload_id}, b"", {})
            raise

    # --- requests ------------------------------------------------------------------------

    async def _head_etag(self, key: str) -> str | None:
        # S3 answers 403, not 404, for a missing key to credentials without s3:ListBucket
        # (PutObject and GetObject are all an uploader needs): unknown, so upload. Credentials
        # that are wrong fail on the PUT, which says so.
        answer = await self._send("HEAD", key, {}, b"", {}, expect=(200, 403, 404))
        if answer.status_code != 200:
            return None
        return answer.headers.get("etag", "").strip('"') or None

    async def _once(
        self,
        method: str,
        key: str,
        query: Mapping[str, str],
        body: bytes,
        headers: Mapping[str, str],
    ) -> httpx.Response:
        url = self.store.url(key)
        signed = sign_headers(
            self._credentials,
            self.store.region,
            method,
            url,
            query=query,
            headers={**headers, "content-length": str(len(body))} if body else headers,
            payload_hash=hashlib.sha256(body).hexdigest(),
        )
        return await self.client.request(
            method, url, params=dict(query) or None, content=body or None, headers=signed
        )

    async def _send(
        self,
        method: str,
        key: str,
        query: Mapping[str, str],
        body: bytes,
        headers: Mapping[str, str],
        *,
        expect: int | tuple[int, ...],
    ) -> httpx.Response:
        wanted = (expect,) if isinstance(expect, int) else expect
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                answer = await self._once(method, key, query, body, headers)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if answer.status_code in wanted:
                    return answer
                reason = f"{method} answered {answer.status_code}{_s3_error(answer)}"
                if answer.status_code not in RETRY_STATUSES:
                    raise StoreError(reason)
            if attempt < self.attempts:
                log.warning(
                    "output store %s: %s (try %d of %d); retrying in %.2g s",
                    self.store.name, reason, attempt, self.attempts, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay *= 2
        raise StoreError(f"{reason} ({self.attempts} tries)")


async def _parts(source: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """`source` regrouped into blocks of exactly `size` bytes (the last may be shorter)."""
    buffer = bytearray()
    try:
        async for chunk in source:
            buffer += chunk
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
        if buffer:
            yield bytes(buffer)
    finally:
        closer = getattr(source, "aclose", None)
        if closer is not None:
            await closer()


def _stored(
    key: str, digest: Digest, content_type: str, data: bytes | None, *, reused: bool
) -> Stored:
    size = image_size(digest.head)
    return Stored(
        key=key,
        size=digest.size,
        sha256=digest.sha256.hexdigest(),
        content_type=content_type,
        width=size[0] if size else None,
        height=size[1] if size else None,
        data=data,
        reused=reused,
    )


def _segment(text: str) -> str:
    """One path segment of a key: no slashes or control characters, never empty or dots."""
    cleaned = re.sub(r"[\x00-\x1f\x7f/\\]", "_", text).strip()
    return cleaned if cleaned.strip(".") else "_"


def _xml_text(body: bytes, tag: str) -> str:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise StoreError(f"the store answered with XML that does not parse: {exc}") from exc
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == tag and element.text:
            return element.text
    raise StoreError(f"the store's answer has no {tag}")


def _s3_error(answer: httpx.Response) -> str:
    """`: Code: Message` of an S3 error body, if there is one."""
    try:
        root = ElementTree.fromstring(answer.content)
    except ElementTree.ParseError:
        return ""
    code, message = root.findtext("Code"), root.findtext("Message")
    return f": {code}: {message}" if code else ""


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, JPEG or WebP from its first bytes; None otherwise."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return width, height
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        return _webp_size(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        length = int.from_bytes(head[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None


def store_origin(env: Mapping[str, str]) -> str | None:
    """The origin the store's URLs point at (for the worker dashboard's img-src), or None."""
    url = OUTPUT_STORE.read(env)
    if url is None:
        return None
    return _store(env, *parse_store_url(OUTPUT_STORE.name, url)).origin


def _store(env: Mapping[str, str], bucket: str, prefix: str) -> Store:
    return Store(
        bucket,
        prefix,
        OUTPUT_STORE_REGION.read(env),
        OUTPUT_STORE_ENDPOINT_URL.read(env),
        OUTPUT_STORE_PATH_STYLE.read(env),
    )


def stored_image_urls(result: Any, limit: int = 4) -> tuple[str, ...]:
    """The URLs of the stored images in a job's result (the dashboard's thumbnails)."""
    images = result.get("images") if isinstance(result, Mapping) else None
    if not isinstance(images, list):
        return ()
    urls = [
        image["url"]
        for image in images
        if isinstance(image, Mapping)
        and isinstance(image.get("url"), str)
        and "sha256" in image
        and str(image.get("content_type", "")).startswith("image/")
    ]
    return tuple(urls[:limit])


async def bytes_source(data: bytes) -> AsyncIterator[bytes]:
    """A Source's iterator over bytes already in memory (A1111's decoded images)."""
    for start in range(0, len(data), READ_CHUNK):
        yield data[start : start + READ_CHUNK]
    if not data:
        yield b""


def inline(entry: dict[str, Any], stored: Stored, budget: int) -> int:
    """Add base64 to `entry` when the file fits what is left of the job's inline budget;
    return the bytes used."""
    if stored.data is None or stored.size > budget:
        return 0
    entry["base64"] = base64.b64encode(stored.data).decode("ascii")
    return stored.size
