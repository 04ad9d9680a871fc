"""Taking a job's subscription at submission: refused with a 400 naming the field unless this
hub delivers webhooks and the URL is a target it may send to (hub/webhooks/targets.py)."""

from __future__ import annotations

from hub.webhooks.settings import WebhookSettings
from hub.webhooks.targets import TargetRefused, check_url
from shared.errors import InvalidInput
from shared.webhook import Webhook


def check_subscription(settings: WebhookSettings, webhook: Webhook, field: str = "") -> None:
    """`field` prefixes the names in errors (`jobs[3].` in a batch)."""
    if not settings.enabled:
        raise InvalidInput(
            f"{field}webhook", "this hub does not send webhooks (HUB_WEBHOOK_SECRET is not set)"
        )
    try:
        check_url(webhook.url, settings.policy)
    except TargetRefused as exc:
        raise InvalidInput(f"{field}webhook.url", str(exc)) from None
