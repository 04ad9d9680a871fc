"""How hub and workers reach the fleet's Redis: declared once here, read the same by both.

The URL has two names. HUB_REDIS_URL is the fleet's own; REDIS_URL is the generic one that
the hub documented first. When both are set, HUB_REDIS_URL wins, in the hub as in the
worker: REDIS_URL is what container images and hosting platforms set for *other* software,
so on a GPU box it may well point elsewhere, and a worker must not follow it away from its
fleet (workers have always preferred HUB_REDIS_URL; only hubs with both names set to
different servers change). Only the URL that is used is checked.

Every other connection setting (TLS files, Sentinel, ...) is one `REDIS.field(...)` line in
`RedisSettings`: both processes then parse it, and both example files list it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import ConfigError
from shared.setting import Setting
from shared.setting_section import Section, read_fields

_URL_SCHEME = re.compile(r"^(redis|rediss|unix)://")

REDIS = Section(
    "Redis connection: the same on the hub and every worker",
    note="HUB_REDIS_URL wins when both are set. A worker needs one; a hub with neither starts\n"
    "its embedded Redis and prints the URL for workers.",
)


def _redis_url(name: str, doc: str) -> Setting[str | None]:
    def parse(name: str, value: str) -> str:
        if not _URL_SCHEME.match(value):
            raise ConfigError(name, "must start with redis://, rediss:// or unix://")
        return value

    # A URL may carry the password.
    return Setting(name, None, doc, parse, secret=True)


HUB_REDIS_URL = REDIS.add(
    _redis_url(
        "HUB_REDIS_URL",
        "The fleet's Redis: redis://[user:password@]host:6379/0, rediss:// for TLS, unix://",
    )
)
REDIS_URL = REDIS.add(
    _redis_url(
        "REDIS_URL", "The same under its generic name; used only when HUB_REDIS_URL is empty"
    )
)


def configured_url(values: Mapping[str, str]) -> str | None:
    """HUB_REDIS_URL, else REDIS_URL, else None (see the module docstring for why)."""
    return HUB_REDIS_URL.read(values) or REDIS_URL.read(values)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = field(repr=False)  # may carry the password

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> RedisSettings | None:
        """None when no URL is configured (the hub then runs its embedded Redis)."""
        url = configured_url(values)
        if url is None:
            return None
        return cls(url=url, **read_fields(cls, values))
