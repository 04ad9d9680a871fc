"""The worker gateway's wire protocol: what a gateway worker and the hub say over one WebSocket.

A worker that must not hold Redis credentials (a rented or partner GPU box) connects to a
hub at `/gateway/worker` with its own gateway token, and asks the hub to run the broker's
state changes for it. Every message is one JSON text frame.

Worker -> hub, a request:    {"id": 7, "op": "claim", "args": {...}}
Hub -> worker, its answer:   {"id": 7, "result": ...}
                         or  {"id": 7, "error": {"kind": "invalid", "message": "..."}}
Hub -> worker, unasked:      {"push": "cancel", "job_id": "..."}   interrupt that job
                             {"push": "revoked"}                     the token was revoked

Requests are answered in any order (a `wait` is answered when work arrives); the worker
matches answers to requests by `id`. The hub takes the worker id from the token, never from
a request, so a gateway worker can act only as itself; see hub/gateway.py for what the hub
checks on each operation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from shared.broker_replies import Claim, NoClaim
from shared.capabilities import Capabilities
from shared.job import Job
from shared.validation import ServiceType, StoredJobId, normalise_services

PATH = "/gateway/worker"
MAX_IN_FLIGHT = 64  # requests one connection may have outstanding; more wait to be read

ErrorKind = Literal["invalid", "forbidden", "unavailable", "internal"]
# The close code the hub sends when it refuses a token (at connect or on revocation):
# 4000-4999 are the codes an application may define (RFC 6455, 7.4.2).
CLOSE_REFUSED = 4401

Short = Annotated[str, msgspec.Meta(max_length=1000)]
Token = Annotated[str, msgspec.Meta(max_length=64)]


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0)]
    op: Annotated[str, msgspec.Meta(max_length=32)]
    args: dict[str, Any] = {}


class RegisterArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    caps: Capabilities
    info: Annotated[dict[str, Any], msgspec.Meta(max_length=64)] = {}


class HeartbeatArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Annotated[str, msgspec.Meta(max_length=32)] = "idle"
    running: Annotated[dict[StoredJobId, Token], msgspec.Meta(max_length=1024)] = {}
    caps: Capabilities | None = None


class StateArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: Literal["active", "paused", "draining"]


class ClaimArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    caps: Capabilities
    hops: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0


class WaitArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    services: Annotated[list[ServiceType], msgspec.Meta(max_length=64)]
    timeout: Annotated[float, msgspec.Meta(ge=0, le=300)]

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "services", normalise_services(self.services))


class ProgressArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    token: Token
    progress: float
    message: Short = ""


class CompleteArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    token: Token
    result: Any = None


class CompleteClaimArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    token: Token
    result: Any = None
    caps: Capabilities | None = None


class FailArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    token: Token
    error: Annotated[str, msgspec.Meta(max_length=4000)]
    retryable: bool = True


class ReleaseArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    token: Token
    reason: Short = ""


class CancelArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    job_id: StoredJobId
    reason: Short = "cancelled"


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


# Every operation a gateway worker may ask for, with the shape of its arguments. There is
# no operation that reads a job: a gateway worker sees only the jobs it claims.
OPERATIONS: dict[str, type[msgspec.Struct]] = {
    "register": RegisterArgs,
    "heartbeat": HeartbeatArgs,
    "deregister": NoArgs,
    "set_state": StateArgs,
    "claim": ClaimArgs,
    "wait": WaitArgs,
    "progress": ProgressArgs,
    "complete": CompleteArgs,
    "complete_and_claim": CompleteClaimArgs,
    "fail": FailArgs,
    "release": ReleaseArgs,
    "cancel": CancelArgs,
}


# -- claims on the wire -------------------------------------------------------------------


class ClaimWire(msgspec.Struct, frozen=True):
    job: Job
    token: str


class NoClaimWire(msgspec.Struct, frozen=True):
    reason: str
    next_due_ms: int | None = None
    offset: int | None = None


def claim_to_wire(claim: Claim | NoClaim) -> dict[str, Any]:
    if isinstance(claim, Claim):
        return {"claim": msgspec.to_builtins(ClaimWire(claim.job, claim.token))}
    return {"none": msgspec.to_builtins(NoClaimWire(claim.reason, claim.next_due_ms, claim.offset))}


def claim_from_wire(value: Any) -> Claim | NoClaim:
    if not isinstance(value, dict):
        raise ValueError(f"expected a claim object, got {type(value).__name__}")
    if "claim" in value:
        wire = msgspec.convert(value["claim"], ClaimWire)
        return Claim(job=wire.job, token=wire.token)
    none = msgspec.convert(value.get("none"), NoClaimWire)
    return NoClaim(none.reason, none.next_due_ms, none.offset)
