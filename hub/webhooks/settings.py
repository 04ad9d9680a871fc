"""The HUB_WEBHOOK_* settings, declared once on their fields (hub/settings.py reads them).

Every hub that delivers needs the same secret (receivers hold one) and should have the same
rules; a hub without HUB_WEBHOOK_SECRET neither delivers nor accepts subscriptions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from hub.webhooks.signing import secret_key
from hub.webhooks.targets import AddressPolicy, IPNetwork, TargetRefused, check_url
from shared.config import ConfigError
from shared.setting import Setting, integer, number, optional_text
from shared.setting_section import Section
from shared.settings import MIB
from shared.webhook import JOB_EVENT_TYPES, TERMINAL_EVENTS

WEBHOOKS = Section("webhooks: job events POSTed to subscribers, signed (README, Webhooks)")
DAY: Final = 86400.0


def _secret(name: str, value: str) -> str:
    try:
        secret_key(value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    return value


def _events(name: str, value: str) -> tuple[str, ...]:
    events = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [e for e in events if e not in JOB_EVENT_TYPES]
    if unknown or not events:
        raise ConfigError(name, f"expected job event types from {', '.join(JOB_EVENT_TYPES)}")
    return events


def _networks(name: str, value: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(name, f"{part!r} is not an address or a CIDR range") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """secret None: this hub neither delivers nor accepts subscriptions."""

    secret: str | None = WEBHOOKS.field(
        Setting(
            "HUB_WEBHOOK_SECRET",
            None,
            "Signing secret, whsec_ + base64 of 24-64 random bytes; empty: webhooks off",
            _secret,
            secret=True,
        )
    )
    url: str | None = WEBHOOKS.field(
        optional_text(
            "HUB_WEBHOOK_URL", doc="A URL sent the events of every job (HUB_WEBHOOK_EVENTS)"
        )
    )
    events: tuple[str, ...] = WEBHOOKS.field(
        Setting(
            "HUB_WEBHOOK_EVENTS",
            TERMINAL_EVENTS,
            "Job event types sent to HUB_WEBHOOK_URL, comma-separated",
            _events,
            shown=",".join(TERMINAL_EVENTS),
        )
    )
    allow: tuple[IPNetwork, ...] = WEBHOOKS.field(
        Setting(
            "HUB_WEBHOOK_ALLOW",
            (),
            "Address ranges (CIDR, comma-separated) webhooks may reach although they are "
            "loopback, private or link-local; empty: public addresses only",
            _networks,
        )
    )
    timeout: float = WEBHOOKS.field(
        number(
            "HUB_WEBHOOK_TIMEOUT_SECONDS",
            10.0,
            lo=0.1,
            hi=300,
            doc="Deadline of one attempt: resolving, connecting, sending and the answer",
        )
    )
    max_response_bytes: int = WEBHOOKS.field(
        integer(
            "HUB_WEBHOOK_MAX_RESPONSE_BYTES",
            64 * 1024,
            lo=0,
            hi=16 * MIB,
            doc="Most bytes of a receiver's answer read; the rest is dropped unread",
        )
    )
    concurrency: int = WEBHOOKS.field(
        integer("HUB_WEBHOOK_CONCURRENCY", 64, lo=1, hi=4096, doc="Attempts in flight on this hub")
    )
    retry_base: float = WEBHOOKS.field(
        number(
            "HUB_WEBHOOK_RETRY_SECONDS",
            5.0,
            lo=0.01,
            hi=3600,
            doc="Wait before the first retry; doubled for each further one (with jitter)",
        )
    )
    retry_cap: float = WEBHOOKS.field(
        number(
            "HUB_WEBHOOK_RETRY_MAX_SECONDS",
            3600.0,
            lo=0.01,
            hi=DAY,
            doc="Longest wait between two attempts",
        )
    )
    retry_for: float = WEBHOOKS.field(
        number(
            "HUB_WEBHOOK_RETRY_FOR_SECONDS",
            DAY,
            lo=0,
            hi=30 * DAY,
            doc="How long after its first attempt a delivery is retried before it is "
            "dead-lettered (GET /webhooks/deliveries?status=failed)",
        )
    )
    claim_idle: float = WEBHOOKS.field(
        number(
            "HUB_WEBHOOK_CLAIM_IDLE_SECONDS",
            60.0,
            lo=0.1,
            hi=DAY,
            doc="A delivery a hub has held this long is taken over by another hub (the "
            "holder is presumed dead); must exceed HUB_WEBHOOK_TIMEOUT_SECONDS",
        )
    )

    def __post_init__(self) -> None:
        if self.secret is None:
            if self.url is not None:
                raise ConfigError("HUB_WEBHOOK_URL", "needs HUB_WEBHOOK_SECRET to sign with")
            return
        if self.claim_idle <= self.timeout:
            raise ConfigError(
                "HUB_WEBHOOK_CLAIM_IDLE_SECONDS",
                f"must exceed HUB_WEBHOOK_TIMEOUT_SECONDS ({self.timeout:g}): a slow but "
                "live hub's deliveries would be taken over and sent twice",
            )
        if self.url is not None:
            try:
                check_url(self.url, self.policy)
            except TargetRefused as exc:
                raise ConfigError("HUB_WEBHOOK_URL", str(exc)) from None

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    @property
    def policy(self) -> AddressPolicy:
        return AddressPolicy(self.allow)
