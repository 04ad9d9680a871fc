"""A job's webhook subscription: where the hub POSTs the job's events, and which events.

It is part of the submission (`JobRequest.webhook`) and is stored with the job (the `webhook`
field of `job:{id}`, JSON), so whichever hub reads the job's events from the stream can
deliver them. Whether the URL is an acceptable target (scheme, no credentials, no private
addresses) is the hub's policy, checked before the job is written (hub/webhooks/targets.py).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

# Every job event type a script writes (docs/ARCHITECTURE.md, "The event stream").
JobEventType = Literal[
    "accepted", "claimed", "progress", "completed", "failed", "retrying", "released", "cancelled"
]
JOB_EVENT_TYPES: Final[tuple[JobEventType, ...]] = (
    "accepted", "claimed", "progress", "completed", "failed", "retrying", "released", "cancelled",
)  # fmt: skip
# What a subscription gets unless it says otherwise: the outcome, once.
TERMINAL_EVENTS: Final[tuple[JobEventType, ...]] = ("completed", "failed", "cancelled")
MAX_URL_LENGTH: Final = 2048


class Webhook(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`webhook` of a submission: the job's events of the types in `events` are POSTed to
    `url`, signed per the Standard Webhooks specification."""

    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_URL_LENGTH,
            description="http:// or https:// URL; public addresses only unless allow-listed",
        ),
    ]
    events: Annotated[
        tuple[JobEventType, ...],
        msgspec.Meta(
            min_length=1,
            max_length=len(JOB_EVENT_TYPES),
            description="job event types to deliver (default: completed, failed, cancelled)",
        ),
    ] = TERMINAL_EVENTS
