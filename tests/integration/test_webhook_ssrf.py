"""Webhooks cannot be turned against the hub's own network (server-side request forgery).

- At submission, a URL that is not http(s), carries credentials, or names a loopback,
  private, link-local, carrier-grade NAT or metadata address (also spelt as IPv4-mapped
  IPv6 or as a bare number) is refused with a 400 naming `webhook.url`, and nothing is
  written; HUB_WEBHOOK_ALLOW lets an operator open a range; a hub without a secret takes no
  subscription at all.
- At delivery, a name is checked against the addresses it resolves to: one resolving to
  loopback is refused without any request being sent, and dead-lettered with the reason.
- The check and the connection use one resolution: a resolver that would answer
  differently the second time (DNS rebinding) is asked once, and the connection goes to
  the address that was checked. A name with any refused address is refused whole.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpcore
import pytest
from redis.asyncio import Redis

from hub.webhooks.sender import GuardedBackend
from hub.webhooks.settings import WebhookSettings
from hub.webhooks.targets import AddressPolicy, TargetRefused
from tests.helpers import wait_until
from tests.hub_support import CLIENT, OPERATOR, hub_client, hub_settings
from tests.webhook_support import receiving, webhook_settings

REFUSED = [
    ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("http://127.8.9.10:8080/hook", "127.8.9.10 is a loopback address"),
    ("http://[::1]:8080/hook", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:7f00:1 is a loopback address"),
    ("http://2130706433/hook", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/hook", "127.0.0.1 is a loopback address"),
    ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
    ("https://192.168.0.10/hook", "192.168.0.10 is a private address"),
    ("http://172.20.0.1/hook", "172.20.0.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
    ("http://169.254.10.1/", "169.254.10.1 is a link-local address"),
    ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ("http://100.64.1.1/", "100.64.1.1 is a carrier-grade NAT address"),
    ("http://0.0.0.0:80/", "0.0.0.0 is a unspecified address"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("ftp://example.com/hook", "must be an http:// or https:// URL"),
    ("file:///etc/passwd", "must be an http:// or https:// URL"),
    ("http://user:secret@example.com/hook", "must not carry credentials"),
    ("http:///hook", "has no host"),
    ("http://example.com:99999/", "has an invalid port"),
    ("http://exa mple.com/", "must be ASCII without spaces"),
]


@pytest.fixture
def no_allow(redis_url: str) -> Any:
    return hub_settings(redis_url, webhooks=webhook_settings(allow=()))


@pytest.mark.parametrize(("url", "why"), REFUSED, ids=[u for u, _ in REFUSED])
async def test_a_forbidden_target_is_refused_at_submission(
    no_allow: Any, redis: Redis, url: str, why: str
) -> None:
    async with hub_client(no_allow, deliver_webhooks=False) as http:
        response = await http.post(
            "/jobs", json={"service_type": "x", "webhook": {"url": url}}, headers=CLIENT
        )
        batch = await http.post(
            "/jobs/batch",
            json={"jobs": [{"service_type": "x"}, {"service_type": "x", "webhook": {"url": url}}]},
            headers=CLIENT,
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["field"] == "webhook.url"
    assert why in error["message"]
    assert batch.status_code == 400
    assert batch.json()["error"]["field"] == "jobs[1].webhook.url"
    assert await redis.zcard("jobs:pending") == 0


async def test_the_allow_list_opens_a_range(redis_url: str) -> None:
    allow = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    settings = hub_settings(redis_url, webhooks=webhook_settings(allow=allow))
    async with hub_client(settings, deliver_webhooks=False) as http:
        for url, status in (
            ("http://10.1.2.3/hook", 201),
            ("http://[::1]:9/hook", 201),
            ("http://192.168.0.1/hook", 400),  # not in the list
            ("https://hooks.example.com/x", 201),  # names are checked when sending
        ):
            response = await http.post(
                "/jobs", json={"service_type": "x", "webhook": {"url": url}}, headers=CLIENT
            )
            assert response.status_code == status, (url, response.text)


async def test_a_hub_without_a_secret_takes_no_subscription(redis_url: str) -> None:
    async with hub_client(hub_settings(redis_url)) as http:
        response = await http.post(
            "/jobs",
            json={"service_type": "x", "webhook": {"url": "https://hooks.example.com/"}},
            headers=CLIENT,
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "field": "webhook",
        "message": "this hub does not send webhooks (HUB_WEBHOOK_SECRET is not set)",
    }


async def test_unknown_event_types_are_refused(redis_url: str) -> None:
    settings = hub_settings(redis_url, webhooks=webhook_settings())
    async with hub_client(settings, deliver_webhooks=False) as http:
        response = await http.post(
            "/jobs",
            json={"service_type": "x", "webhook": {"url": "https://h.example/", "events": ["x"]}},
            headers=CLIENT,
        )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "webhook.events[0]"


async def test_a_name_resolving_to_loopback_is_refused_when_sending(
    redis_url: str, redis: Redis
) -> None:
    settings = hub_settings(redis_url, webhooks=webhook_settings(allow=(), retry_for=60))
    async with receiving() as rx, hub_client(settings) as http:
        url = rx.url.replace("127.0.0.1", "localhost")
        created = await http.post(
            "/jobs",
            json={"service_type": "x", "webhook": {"url": url, "events": ["accepted"]}},
            headers=CLIENT,
        )
        assert created.status_code == 201, created.text

        async def dead_letter() -> list[dict[str, Any]]:
            page = await http.get("/webhooks/deliveries?status=failed", headers=OPERATOR)
            found: list[dict[str, Any]] = page.json()["deliveries"]
            return found

        letters: list[dict[str, Any]] = await wait_until(dead_letter, message="dead-lettered")
        (failed,) = letters
    assert rx.deliveries == []
    assert failed["attempts"] == 1  # refused is final: no retry
    assert failed["last_error"].startswith("refused: localhost resolves to ")
    assert "is a loopback address" in failed["last_error"]


class Recording(httpcore.AsyncNetworkBackend):
    """An inner backend that records where it was asked to connect, and connects nowhere."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.hosts.append(host)
        raise httpcore.ConnectError("recorded")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("no sleeping")


def rebinding(*answers: list[str]) -> tuple[Any, list[str]]:
    """A resolver that gives each answer in turn (as a rebinding DNS server would)."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    return resolve, asked


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    resolve, asked = rebinding(["93.184.216.34"], ["127.0.0.1"])
    inner = Recording()
    backend = GuardedBackend(AddressPolicy(), resolve, inner)
    with pytest.raises(httpcore.ConnectError, match="recorded"):
        await backend.connect_tcp("hooks.example.com", 443)
    assert asked == ["hooks.example.com"]
    assert inner.hosts == ["93.184.216.34"]


async def test_a_name_with_any_refused_address_is_refused_whole() -> None:
    resolve, _ = rebinding(["93.184.216.34", "10.0.0.7"])
    inner = Recording()
    backend = GuardedBackend(AddressPolicy(), resolve, inner)
    with pytest.raises(TargetRefused, match=r"hooks\.example\.com resolves to 10\.0\.0\.7"):
        await backend.connect_tcp("hooks.example.com", 443)
    assert inner.hosts == []


async def test_each_address_is_tried_in_turn() -> None:
    resolve, _ = rebinding(["93.184.216.34", "93.184.216.35"])
    inner = Recording()
    backend = GuardedBackend(AddressPolicy(), resolve, inner)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("hooks.example.com", 443)
    assert inner.hosts == ["93.184.216.34", "93.184.216.35"]


def test_the_settings_refuse_a_hub_url_on_a_private_address() -> None:
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match=r"HUB_WEBHOOK_URL: refused: 10\.0\.0\.1 is a private"):
        WebhookSettings(secret=webhook_settings().secret, url="http://10.0.0.1/")
