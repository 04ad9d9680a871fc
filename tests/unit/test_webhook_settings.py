"""The HUB_WEBHOOK_* settings: read from the environment, and refused at start-up with the
setting's name when they cannot work (a URL without a secret, a take-over threshold a slow
attempt could cross, a private hub URL, an unknown event type, a bad range)."""

from __future__ import annotations

import ipaddress

import pytest

from hub.settings import HubSettings
from shared.config import ConfigError
from shared.webhook import TERMINAL_EVENTS
from tests.webhook_support import SECRET

TOKENS = {"HUB_AUTH_TOKEN": "client-token-0001"}


def test_off_by_default() -> None:
    settings = HubSettings.from_env(TOKENS).webhooks
    assert not settings.enabled
    assert settings.events == TERMINAL_EVENTS
    assert (settings.timeout, settings.retry_for, settings.claim_idle) == (10.0, 86400.0, 60.0)


def test_read_from_the_environment() -> None:
    settings = HubSettings.from_env(
        {
            **TOKENS,
            "HUB_WEBHOOK_SECRET": SECRET,
            "HUB_WEBHOOK_URL": "https://hooks.example.com/emp",
            "HUB_WEBHOOK_EVENTS": "accepted, completed",
            "HUB_WEBHOOK_ALLOW": "10.0.0.0/8, ::1",
        }
    ).webhooks
    assert settings.enabled
    assert settings.url == "https://hooks.example.com/emp"
    assert settings.events == ("accepted", "completed")
    assert settings.allow == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HUB_WEBHOOK_URL": "https://h.example/"}, "HUB_WEBHOOK_URL: needs HUB_WEBHOOK_SECRET"),
        ({"HUB_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "HUB_WEBHOOK_SECRET: must encode 24 to 64"),
        (
            {"HUB_WEBHOOK_SECRET": SECRET, "HUB_WEBHOOK_URL": "http://169.254.169.254/"},
            "HUB_WEBHOOK_URL: refused: 169.254.169.254 is a cloud metadata address",
        ),
        (
            {"HUB_WEBHOOK_SECRET": SECRET, "HUB_WEBHOOK_CLAIM_IDLE_SECONDS": "10"},
            "HUB_WEBHOOK_CLAIM_IDLE_SECONDS: must exceed HUB_WEBHOOK_TIMEOUT_SECONDS",
        ),
        ({"HUB_WEBHOOK_EVENTS": "completed,finished"}, "HUB_WEBHOOK_EVENTS: expected job event"),
        ({"HUB_WEBHOOK_ALLOW": "10.0.0.0/33"}, "HUB_WEBHOOK_ALLOW: '10.0.0.0/33' is not"),
        ({"HUB_WEBHOOK_SECRETS": SECRET}, "HUB_WEBHOOK_SECRETS: unknown setting"),
    ],
)
def test_settings_that_cannot_work_stop_the_hub(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        HubSettings.from_env({**TOKENS, **env})
    assert SECRET.removeprefix("whsec_") not in str(caught.value)
