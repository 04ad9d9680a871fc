"""ComfyUI I/O the connector delegates: the job's WebSocket, output file downloads, and their
upload to the output store."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import mimetypes
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from worker.connectors.base import JobContext, JobFailed
from worker.connectors.comfyui_protocol import OutputFile
from worker.connectors.httpcommon import status_failure
from worker.connectors.output_store import READ_CHUNK, OutputStore, StoreError, inline

# Preview frames can be large images; the socket is a trusted local service.
WS_MAX_FRAME: Final = 64 * 1024 * 1024
POLL: Final = object()  # ComfySocket.recv: nothing arrived in time, poll history instead
CANCEL: Final = object()  # ComfySocket.recv: the job was cancelled
WS_ERRORS: Final = (OSError, TimeoutError, InvalidHandshake, InvalidURI)


class ComfySocket:
    """The job's socket, reopened under the same clientId after a drop (ComfyUI then resumes
    sending that client's events)."""

    def __init__(self, url: str, headers: Mapping[str, str], open_timeout: float) -> None:
        self.url = url
        self._headers = dict(headers)
        self._open_timeout = open_timeout
        self.ws: ClientConnection | None = None

    async def open(self) -> None:
        await self.close()
        self.ws = await connect(
            self.url,
            additional_headers=self._headers,
            max_size=WS_MAX_FRAME,
            open_timeout=self._open_timeout,
            close_timeout=2,
        )

    async def recv(self, cancel_waiter: asyncio.Future[Any], idle_limit: float | None) -> object:
        """The next frame, or CANCEL / POLL. Cancelling websockets' recv() loses no data."""
        if self.ws is None:
            raise ConnectionClosed(None, None)
        receive = asyncio.ensure_future(self.ws.recv())
        done, _ = await asyncio.wait(
            [receive, cancel_waiter], timeout=idle_limit, return_when=asyncio.FIRST_COMPLETED
        )
        if receive in done:
            return receive.result()
        receive.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await receive
        return CANCEL if cancel_waiter.done() else POLL

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            with contextlib.suppress(Exception):
                await ws.close()


async def fetch_outputs(
    client: httpx.AsyncClient, base_url: str, files: list[OutputFile], inline_budget: int
) -> list[dict[str, Any]]:
    """Download every output through `/view`: base64 inline while the job's byte budget lasts,
    references (with a URL) after that, so a video cannot bloat the job record."""
    images = []
    for file in files:
        image, inlined = await _fetch(client, base_url, file, inline_budget)
        inline_budget -= inlined
        images.append(image)
    return images


async def _fetch(
    client: httpx.AsyncClient, base_url: str, file: OutputFile, budget: int
) -> tuple[dict[str, Any], int]:
    params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
    url = f"{base_url}/view?{urlencode(params)}"
    image: dict[str, Any] = {
        "node": file.node,
        "filename": file.filename,
        "subfolder": file.subfolder,
        "type": file.type,
    }
    guessed = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
    try:
        async with client.stream("GET", "/view", params=params) as response:
            if response.status_code != 200:
                await response.aread()
                failure = status_failure("ComfyUI", response, f"download of {file.filename}")
                failure.retryable = True  # the run succeeded; the file may come back
                raise failure
            image["content_type"] = response.headers.get("content-type", guessed)
            length = _content_length(response)
            if length is not None and length > budget:
                # Over budget: do not even read it (ComfyUI sends Content-Length for files).
                image.update(bytes=length, url=url)
                return image, 0
            data = await response.aread()
    except httpx.TransportError as exc:
        raise JobFailed(f"cannot download {url}: {exc}", retryable=True) from exc
    image["bytes"] = len(data)
    if len(data) > budget:
        image["url"] = url
        return image, 0
    image["base64"] = base64.b64encode(data).decode("ascii")
    return image, len(data)


def _content_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def store_outputs(
    client: httpx.AsyncClient,
    store: OutputStore,
    job: JobContext,
    files: list[OutputFile],
) -> list[dict[str, Any]]:
    """Stream every output from `/view` into the store, in order: `{n}-{filename}` keys, so
    the next attempt of the job finds what this one already stored."""
    images = []
    budget = store.inline_max
    for n, file in enumerate(files):
        params = {"filename": file.filename, "subfolder": file.subfolder, "type": file.type}
        content_type = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"

        def source(params: dict[str, str] = params) -> AsyncIterator[bytes]:
            return _view_bytes(client, params)

        key = store.key_for(job.customer_id, job.job_id, n, file.filename)
        try:
            stored = await store.put(key, source, content_type)
        except StoreError as exc:
            raise store.failure(file.filename, exc) from exc
        entry: dict[str, Any] = {
            "node": file.node,
            "filename": file.filename,
            "subfolder": file.subfolder,
            "type": file.type,
            **store.describe(stored),
        }
        budget -= inline(entry, stored, budget)
        images.append(entry)
    return images


async def _view_bytes(client: httpx.AsyncClient, params: dict[str, str]) -> AsyncIterator[bytes]:
    try:
        async with client.stream("GET", "/view", params=params) as response:
            if response.status_code != 200:
                await response.aread()
                failure = status_failure("ComfyUI", response, f"download of {params['filename']}")
                failure.retryable = True  # the run succeeded; the file may come back
                raise failure
            async for chunk in response.aiter_bytes(READ_CHUNK):
                yield chunk
    except httpx.TransportError as exc:
        raise JobFailed(
            f"cannot download {params['filename']} from ComfyUI: {exc}", retryable=True
        ) from exc
