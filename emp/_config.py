"""Where the hub is and who the client is: arguments first, then the environment.

`EMP_HUB_URL` and `EMP_TOKEN` are read when the caller passes no URL or token, the same
names the `emp` command line reads, so a shell configured for one is configured for both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from emp.retry import RetryPolicy

DEFAULT_URL: Final = "http://localhost:3001"
URL_ENV: Final = "EMP_HUB_URL"
TOKEN_ENV: Final = "EMP_TOKEN"


def package_version() -> str:
    try:
        return version("emp-redis")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True, slots=True)
class Config:
    url: str  # without a trailing slash
    token: str | None
    timeout: float  # seconds for connecting, and for each read beyond a long-poll's wait
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        env: Mapping[str, str] | None = None,
    ) -> Config:
        environ = os.environ if env is None else env
        chosen = url or environ.get(URL_ENV) or DEFAULT_URL
        if not chosen.startswith(("http://", "https://")):
            raise ValueError(f"hub URL must start with http:// or https://, got {chosen!r}")
        return cls(
            url=chosen.rstrip("/"),
            token=token or environ.get(TOKEN_ENV) or None,
            timeout=timeout,
            retry=retry or RetryPolicy(),
        )

    @property
    def user_agent(self) -> str:
        return f"emp-python/{package_version()}"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def headers(self) -> dict[str, str]:
        return {"User-Agent": self.user_agent, "Accept": "application/json", **self.auth_headers()}

    @property
    def ws_url(self) -> str:
        """The hub's `/ws` endpoint (wss:// for an https:// hub), under any path prefix."""
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"
