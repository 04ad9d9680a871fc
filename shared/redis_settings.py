"""How hub and workers reach the fleet's Redis: declared once here, read the same by both.

Four deployments, chosen by settings alone (`shared/redis_client.py` turns them into a
client):

- **one server**: `HUB_REDIS_URL` (or `REDIS_URL`) = `redis://`, `rediss://` (TLS) or
  `unix://`;
- **TLS**: a `rediss://` URL, with `REDIS_TLS_CA_FILE` when the server's certificate is not
  signed by a system CA, `REDIS_TLS_CERT_FILE` / `REDIS_TLS_KEY_FILE` when the server asks
  for a client certificate; the server's host name is checked unless
  `REDIS_TLS_VERIFY_HOSTNAME=false`;
- **Sentinel**: `REDIS_SENTINELS=host:port,...` plus `REDIS_SENTINEL_MASTER=name`. The
  sentinels name the primary; the URL, now optional, only says how to talk to it: its scheme
  (`rediss://` for TLS, to the sentinels too), user, password and database. Its host and port
  are not used. `REDIS_SENTINEL_PASSWORD` is the sentinels' own password (`requirepass` in
  sentinel.conf), which is usually not the data nodes'. We chose these variables over a
  `redis+sentinel://` URL because redis-py has no such scheme, and a password in a URL that
  lists several hosts is ambiguous (the sentinels' or the data nodes'?).
- **Redis Cluster**: `REDIS_CLUSTER=true`. The URL names any one node (a seed: redis-py asks
  it for the slot map and connects to the other nodes itself), with the user, password and
  TLS settings every node shares. A cluster has database 0 only, and it fails over by itself,
  so Sentinel does not apply. Every key of one pool must be in one slot, because the Lua
  scripts touch a pool's keys together: each pool's prefix carries its own hash tag
  (`{gpu-eu}:`, shared/pools.py), so REDIS_KEY_PREFIX must hold no braces of its own.

The URL has two names. HUB_REDIS_URL is the fleet's own; REDIS_URL is the generic one that
the hub documented first. When both are set, HUB_REDIS_URL wins, in the hub as in the
worker: REDIS_URL is what container images and hosting platforms set for *other* software,
so on a GPU box it may well point elsewhere, and a worker must not follow it away from its
fleet. Only the URL that is used is checked.

Every other connection setting is one `REDIS.field(...)` line in `RedisSettings`: both
processes then parse it, and both example files list it. Combinations that cannot work (a CA
file with a plain `redis://` URL, a sentinel master without sentinels) stop the process at
start-up with a one-line error naming the setting, like a bad value does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.config import ConfigError
from shared.redaction import redact_url
from shared.setting import Setting, flag, number, optional_text
from shared.setting_section import Section, field_settings, read_fields

_URL_SCHEME = re.compile(r"^(redis|rediss|unix)://")
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+))(?::(?P<port>\d+))?$"
)
SENTINEL_PORT = 26379
# Seconds: a command client's read timeout, after which its connection counts as dead.
DEFAULT_COMMAND_TIMEOUT = 10.0

REDIS = Section(
    "Redis connection: the same on the hub and every worker",
    note="HUB_REDIS_URL wins when both are set. A worker needs a URL or REDIS_SENTINELS; a hub\n"
    "with neither starts its embedded Redis and prints the URL for workers.\n"
    "Sentinel: set REDIS_SENTINELS and REDIS_SENTINEL_MASTER; the URL then only gives the\n"
    "scheme (rediss:// for TLS), user, password and database, e.g. redis://emp-worker:pw@/0.\n"
    "Redis Cluster: REDIS_CLUSTER=true and the URL of any one node; every key prefix then\n"
    "needs a hash tag, e.g. {emp}: (one pool, one slot).",
)


def _redis_url(name: str, doc: str) -> Setting[str | None]:
    def parse(name: str, value: str) -> str:
        if not _URL_SCHEME.match(value):
            raise ConfigError(name, "must start with redis://, rediss:// or unix://")
        return value

    # A URL may carry the password.
    return Setting(name, None, doc, parse, secret=True)


def _sentinels(name: str, doc: str) -> Setting[tuple[tuple[str, int], ...]]:
    """host:port pairs, comma-separated; [::1]:26379 for IPv6; the port defaults to 26379."""

    def parse(name: str, value: str) -> tuple[tuple[str, int], ...]:
        out: list[tuple[str, int]] = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            match = _HOST_PORT.match(item)
            if match is None:
                raise ConfigError(name, f"{item!r} is not host:port")
            port = int(match["port"] or SENTINEL_PORT)
            if not 0 < port < 65536:
                raise ConfigError(name, f"{item!r}: the port must be 1-65535")
            out.append((match["v6"] or match["host"], port))
        return tuple(out)

    return Setting(name, (), doc, parse, shown="")


def _file(name: str, doc: str) -> Setting[Path | None]:
    """A file that must exist when the process starts, not at the first TLS handshake."""

    def parse(name: str, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(name, f"no such file: {value}")
        return path

    return Setting(name, None, doc, parse)


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


def url_name(values: Mapping[str, str]) -> str:
    """The variable the URL came from, for error messages."""
    return HUB_REDIS_URL.name if HUB_REDIS_URL.read(values) else REDIS_URL.name


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """url: None only with Sentinel (then plain TCP, no password, database 0)."""

    url: str | None = field(default=None, repr=False)  # may carry the password
    tls_ca_file: Path | None = REDIS.field(  # noqa: RUF009 - a field, like dataclasses.field
        _file(
            "REDIS_TLS_CA_FILE",
            "rediss:// only: CA certificates (PEM) to verify the server with; empty: the system's",
        )
    )
    tls_cert_file: Path | None = REDIS.field(  # noqa: RUF009 - a field, like dataclasses.field
        _file(
            "REDIS_TLS_CERT_FILE",
            "rediss:// only: client certificate (PEM), for servers that ask for one",
        )
    )
    tls_key_file: Path | None = REDIS.field(  # noqa: RUF009 - a field, like dataclasses.field
        _file("REDIS_TLS_KEY_FILE", "rediss:// only: the client certificate's private key (PEM)")
    )
    tls_verify_hostname: bool = REDIS.field(
        flag(
            "REDIS_TLS_VERIFY_HOSTNAME",
            True,
            doc="rediss:// only: check that the server's certificate names the host connected to",
        )
    )
    sentinels: tuple[tuple[str, int], ...] = REDIS.field(
        _sentinels(
            "REDIS_SENTINELS",
            "Sentinel: the sentinels, host:port,host:port (port 26379 when omitted); empty: "
            "no Sentinel",
        )
    )
    sentinel_master: str | None = REDIS.field(
        optional_text(
            "REDIS_SENTINEL_MASTER", doc="Sentinel: the monitored primary's name (sentinel.conf)"
        )
    )
    sentinel_password: str | None = REDIS.field(
        optional_text(
            "REDIS_SENTINEL_PASSWORD",
            doc="Sentinel: the sentinels' own password; empty: none",
            secret=True,
        )
    )
    cluster: bool = REDIS.field(
        flag(
            "REDIS_CLUSTER",
            False,
            doc="Redis Cluster: the URL names any one node; the client finds the others",
        )
    )
    command_timeout: float = REDIS.field(
        number(
            "REDIS_COMMAND_TIMEOUT_SECONDS",
            DEFAULT_COMMAND_TIMEOUT,
            doc="A command with no reply after this long has a dead connection (a NAT or "
            "firewall that dropped it silently): it is replaced and the command retried. "
            "Shorter notices sooner; it must stay well above the slowest command (ms)",
            lo=0.5,
            hi=3600,
        )
    )

    @property
    def tls(self) -> bool:
        return self.url is not None and self.url.startswith("rediss://")

    def describe(self) -> str:
        """Where this connects, without credentials: for banners and the worker dashboard."""
        if self.cluster:
            return f"the Redis Cluster seeded by {redact_url(self.url or '')}"
        if not self.sentinels:
            return redact_url(self.url or "")
        where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        tls = " over TLS" if self.tls else ""
        return f"the primary of Sentinel master {self.sentinel_master!r} at {where}{tls}"

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> RedisSettings | None:
        """None when neither a URL nor sentinels are configured (the hub then runs its
        embedded Redis). Raises ConfigError for a combination that cannot work."""
        url = configured_url(values)
        settings = cls(url=url, **read_fields(cls, values))
        settings.check(url_name(values))
        return settings if url is not None or settings.sentinels else None

    def check(self, url_name: str = HUB_REDIS_URL.name) -> None:
        """ConfigError, naming the setting, for a combination that cannot work."""
        if self.sentinels and not self.sentinel_master:
            raise ConfigError(_name("sentinel_master"), "required when REDIS_SENTINELS is set")
        if not self.sentinels:
            for name in ("sentinel_master", "sentinel_password"):
                if getattr(self, name) is not None:
                    raise ConfigError(_name(name), "only applies with REDIS_SENTINELS")
        if self.sentinels and self.url is not None and self.url.startswith("unix://"):
            raise ConfigError(url_name, "unix:// cannot be used with REDIS_SENTINELS")
        if not self.tls:
            for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
                if getattr(self, name) is not None:
                    raise ConfigError(_name(name), f"needs a rediss:// URL in {url_name}")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ConfigError(_name("tls_key_file"), "needs REDIS_TLS_CERT_FILE")
        if self.cluster:
            # A cluster finds its own nodes and fails over by itself: Sentinel has no part in
            # it. A cluster has one database (0) and no unix sockets between its nodes.
            if self.sentinels:
                raise ConfigError(_name("cluster"), "cannot be used with REDIS_SENTINELS")
            if self.url is None:
                raise ConfigError(
                    HUB_REDIS_URL.name, "required with REDIS_CLUSTER (any one node; or REDIS_URL)"
                )
            if self.url.startswith("unix://"):
                raise ConfigError(url_name, "unix:// cannot be used with REDIS_CLUSTER")
            if _database(self.url) != 0:
                raise ConfigError(url_name, "a Redis Cluster has database 0 only")


def _database(url: str) -> int:
    """The database a redis:// or rediss:// URL names (path or ?db=), 0 when none."""
    parts = urlsplit(url)
    named = parse_qs(parts.query).get("db", [""])[0] or parts.path.strip("/") or "0"
    return int(named) if named.isdigit() else -1


def _name(field_name: str) -> str:
    """The variable behind a field of RedisSettings."""
    return field_settings(RedisSettings)[field_name].name
