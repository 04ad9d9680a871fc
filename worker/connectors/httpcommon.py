"""What the HTTP connectors share: one lazily created client, and how failures are classified.

The classification rule is the same everywhere: the service could not be reached or broke
(connection errors, timeouts, 5xx) -> retryable, another attempt may succeed; the service
understood the request and refused it (4xx) -> not retryable, the payload must change.
Connectors refine it where their service is more specific.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from worker.connectors.base import JobFailed
from worker.connectors.util import shorten

# Statuses in the 4xx range that describe the moment, not the request.
TRANSIENT_4XX = frozenset({408, 409, 425, 429})


class HttpService:
    """Holds one `httpx.AsyncClient` for a connector's service.

    The client is created on first use, inside the running event loop, so a connector can be
    constructed anywhere (the registry builds it before the worker's loop starts)."""

    def __init__(
        self,
        label: str,
        base_url: str,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._auth = auth
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                auth=self._auth,
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=True,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        request_timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; transport problems become a retryable JobFailed naming the URL."""
        url = self.base_url + path
        try:
            return await self.client.request(
                method,
                path,
                json=json_body,
                params=params,
                timeout=(
                    httpx.USE_CLIENT_DEFAULT
                    if request_timeout is None
                    else httpx.Timeout(request_timeout)
                ),
            )
        except httpx.TimeoutException as exc:
            raise JobFailed(
                f"{self.label} did not answer {method} {url} in time ({type(exc).__name__})",
                retryable=True,
            ) from exc
        except httpx.TransportError as exc:
            raise JobFailed(
                f"cannot reach {self.label} at {url}: {exc or type(exc).__name__}", retryable=True
            ) from exc


def auth_headers(value: str | None) -> dict[str, str]:
    """`*_AUTH_HEADER` settings hold the whole Authorization value ("Bearer x", "Basic y")."""
    return {} if not value else {"Authorization": value}


def response_json(response: httpx.Response) -> Any:
    """The decoded body, or None when it is not JSON (error pages, empty bodies)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None


def body_excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except UnicodeDecodeError:
        return f"<{len(response.content)} bytes>"
    return shorten(text) if text.strip() else "<empty body>"


def status_failure(label: str, response: httpx.Response, what: str = "request") -> JobFailed:
    """The generic rule for an unexpected status: 5xx and transient 4xx retry, other 4xx don't."""
    status = response.status_code
    body = response_json(response)
    retryable = status >= 500 or status in TRANSIENT_4XX
    detail = _error_text(body) if body is not None else body_excerpt(response)
    return JobFailed(
        f"{label} answered {status} to the {what}: {detail}",
        retryable=retryable,
        details={"status": status, "body": body if body is not None else body_excerpt(response)},
    )


def _error_text(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return shorten(value)
    return shorten(json.dumps(body, default=str))
