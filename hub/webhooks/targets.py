"""Where a hub may send a webhook: the URL rules, and the addresses it refuses.

A webhook makes the hub send a request to a URL a client chose, from inside the operator's
network: without rules, a client could make it reach the cloud metadata service, Redis, or
an admin page on a private address (server-side request forgery). So:

- URLs are http:// or https://, ASCII, with a host and without credentials;
- the addresses a host resolves to must all be public: loopback, private, link-local,
  carrier-grade NAT, multicast, metadata and other non-global ranges are refused, as are the
  same addresses wrapped in IPv6 (::ffff:127.0.0.1, 6to4, NAT64), unless an operator
  allow-listed their range (HUB_WEBHOOK_ALLOW);
- names are checked when the hub connects, against the addresses it then connects to
  (hub/webhooks/sender.py): a name that resolves elsewhere later cannot slip past a check
  made earlier. At submission only what the URL itself says is checked (an IP literal).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS, GCP, Azure: 169.254.169.254; AWS over IPv6; Alibaba).
METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_NAMED: Final[tuple[tuple[str, str], ...]] = (
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("fc00::/7", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
)
_NAMED_NETWORKS: Final = tuple((ipaddress.ip_network(n), why) for n, why in _NAMED)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(Exception):
    """The URL or an address it leads to is not a webhook target this hub sends to."""


def _unwrapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), or the address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify(ip: IPAddress) -> str | None:
    """Why `ip` is not a public address ('loopback', 'private', ...), or None if it is."""
    ip = _unwrapped(ip)
    if ip in METADATA:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    for network, why in _NAMED_NETWORKS:
        if ip.version == network.version and ip in network:
            return why
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "reserved"
    return None


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo or a URL writes it ('[::1]', 'fe80::1%eth0' included)."""
    return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])


def literal_address(host: str) -> IPAddress | None:
    """The address `host` spells out, if it is one. Besides the usual forms this catches
    what the system resolver also reads as IPv4 without asking DNS ('127.1', '0x7f000001',
    '2130706433'), so such a host is checked at submission like any IP literal."""
    try:
        return parse_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the networks an operator allow-listed (HUB_WEBHOOK_ALLOW)."""

    allow: Sequence[IPNetwork] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the hub may not connect to `ip`, or None when it may."""
        for candidate in {ip, _unwrapped(ip)}:
            if any(candidate.version == n.version and candidate in n for n in self.allow):
                return None
        why = classify(ip)
        if why is None:
            return None
        return f"{ip} is a {why} address (allow its range with HUB_WEBHOOK_ALLOW)"

    def check_address(self, host: str, ip: IPAddress) -> None:
        why = self.refusal(ip)
        if why is not None:
            shown = "" if str(ip) == host.strip("[]") else f"{host} resolves to "
            raise TargetRefused(f"refused: {shown}{why}")


def check_url(url: str, policy: AddressPolicy) -> SplitResult:
    """The URL's parts if it is an acceptable webhook target as written; TargetRefused
    (the message says why) if not. Names are not resolved here (see the module docstring)."""
    if not url.isascii() or any(ch <= " " or ch == "\x7f" for ch in url):
        raise TargetRefused(
            "must be ASCII without spaces or control characters (punycode international names)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused(
            "must not carry credentials (user:password@): receivers check the signature"
        )
    host = parts.hostname
    if not host:
        raise TargetRefused("has no host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise TargetRefused("has an invalid port") from None
    ip = literal_address(host)
    if ip is not None:
        policy.check_address(host, ip)
    return parts
