"""The request bodies the hub's REST routes accept, as msgspec models, in one place: the
routes decode into them (hub/routes_jobs.py) and the OpenAPI document builds its request
schemas from them (hub/openapi.py), so what is documented is what is validated.

A single submission's body is `shared.job.JobRequest`, which the broker and the legacy
WebSocket protocol use too, so it stays in shared/.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.job import JobRequest

MAX_BATCH = 1000


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """POST /jobs/batch: up to 1000 submissions, validated all before any is written."""

    jobs: Annotated[list[JobRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = "cancelled by request"
