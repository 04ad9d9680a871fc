"""What a stream entry is to webhooks: job events the job or the hub subscribed make one
delivery per URL, with an id that is the same whichever hub builds it and a body in the
Standard Webhooks payload shape; nothing else makes one."""

from __future__ import annotations

import orjson
import pytest

from hub.webhooks.messages import Target, plan
from shared.webhook import TERMINAL_EVENTS, Webhook

ENTRY = "1767268800000-3"
COMPLETED = {
    "kind": "job",
    "type": "completed",
    "job": "job-1",
    "seq": "4",
    "customer": "acme",
    "data": '{"worker_id": "w1", "run_ms": 1200}',
}
JOB_HOOK = Webhook(url="https://job.example/hook")
HUB = Target("https://hub.example/hook", frozenset(TERMINAL_EVENTS))


def test_the_body_is_the_standard_webhooks_payload_shape() -> None:
    (message,) = plan(ENTRY, COMPLETED, JOB_HOOK, None)
    assert message.id == f"{ENTRY}.job"
    assert message.url == "https://job.example/hook"
    assert orjson.loads(message.body) == {
        "type": "job.completed",
        "timestamp": "2026-01-01T12:00:00.000Z",
        "data": {
            "job_id": "job-1",
            "customer_id": "acme",
            "event": "completed",
            "seq": 4,
            "worker_id": "w1",
            "run_ms": 1200,
        },
    }


def test_the_same_entry_makes_the_same_deliveries_on_any_hub() -> None:
    assert plan(ENTRY, COMPLETED, JOB_HOOK, HUB) == plan(ENTRY, dict(COMPLETED), JOB_HOOK, HUB)


def test_job_and_hub_subscriptions_each_get_one() -> None:
    ids = [(m.id, m.url) for m in plan(ENTRY, COMPLETED, JOB_HOOK, HUB)]
    assert ids == [(f"{ENTRY}.job", JOB_HOOK.url), (f"{ENTRY}.hub", HUB.url)]


def test_one_url_subscribed_twice_gets_one() -> None:
    same = Webhook(url=HUB.url)
    assert [m.id for m in plan(ENTRY, COMPLETED, same, HUB)] == [f"{ENTRY}.job"]


@pytest.mark.parametrize(
    ("fields", "subscription", "hub"),
    [
        ({**COMPLETED, "type": "progress"}, JOB_HOOK, HUB),  # not subscribed by either
        ({**COMPLETED, "kind": "worker"}, JOB_HOOK, HUB),  # not a job event
        ({**COMPLETED, "kind": "webhook", "type": "webhook_failed"}, JOB_HOOK, HUB),
        (COMPLETED, Webhook(url=JOB_HOOK.url, events=("accepted",)), None),
        (COMPLETED, None, None),
    ],
)
def test_what_makes_no_delivery(
    fields: dict[str, str], subscription: Webhook | None, hub: Target | None
) -> None:
    assert plan(ENTRY, fields, subscription, hub) == []


def test_event_data_cannot_overwrite_the_job_fields() -> None:
    forged = {**COMPLETED, "data": '{"job_id": "other", "event": "x", "seq": 99}'}
    (message,) = plan(ENTRY, forged, JOB_HOOK, None)
    data = orjson.loads(message.body)["data"]
    assert (data["job_id"], data["event"], data["seq"]) == ("job-1", "completed", 4)
