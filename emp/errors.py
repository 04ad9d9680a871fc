"""What can go wrong when talking to a hub, as exceptions a caller can tell apart.

- `ApiError` and its subclasses: the hub answered with an error. Every error answer has the
  shape `{"error": {"field": ..., "message": ...}}`; the exception carries the field, the
  message and the HTTP status, so a caller can point at the offending input.
- `HubUnreachable`: no usable answer at all (refused, reset, timed out), after the retries
  the client's policy allows.
- `WaitTimeout`, `JobFailed`: the hub answered fine, but the job did not finish in time, or
  finished without succeeding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emp.models import Job


class EmpError(Exception):
    """Base class of every error this package raises."""


class ApiError(EmpError):
    """The hub refused a request: its HTTP status and the `{field, message}` it answered.

    `field` names what was at fault (`"priority"`, `"requirements.hardware.gpu.memory_gb"`,
    `"Idempotency-Key"`), or is `""` when nothing in particular was.
    """

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{status} {field}: {message}" if field else f"{status}: {message}")
        self.status = status
        self.field = field
        self.message = message


class BadRequest(ApiError):
    """400, 408, 413, 415, 422: the request itself is wrong; sending it again will not help."""


class PayloadTooLarge(BadRequest):
    """413: the body (usually the payload) is over the hub's size limit."""


class Unauthorized(ApiError):
    """401: no token, or one the hub does not know."""


class Forbidden(ApiError):
    """403: the token is valid but may not do this (operator routes, another customer)."""


class NotFound(ApiError):
    """404: no such job or worker (or one this token may not see)."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this (cancel a finished job, retry a
    job that did not fail, an id another customer already uses)."""


class ServerError(ApiError):
    """5xx: the hub could not do it (503: its Redis is unreachable; try again later)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: BadRequest,
    409: Conflict,
    413: PayloadTooLarge,
    415: BadRequest,
    422: BadRequest,
}


def api_error(status: int, field: str, message: str) -> ApiError:
    """The most specific ApiError for an HTTP status."""
    if status >= 500:
        return ServerError(status, field, message)
    return _BY_STATUS.get(status, ApiError)(status, field, message)


class HubUnreachable(EmpError):
    """No answer from the hub: connection refused, reset or timed out, after retries.

    For a request that is not safe to repeat (cancel, retry), the hub may have carried it
    out before the answer was lost; the message says so."""


class ProtocolError(EmpError):
    """The hub answered something this client does not understand (a proxy's error page,
    a hub of an incompatible version)."""


class WaitTimeout(EmpError, TimeoutError):
    """The job did not finish within the time given; `job` is its last state seen."""

    def __init__(self, job_id: str, job: Job | None) -> None:
        state = f"still {job.status}" if job is not None else "not read"
        super().__init__(f"job {job_id} did not finish in time ({state})")
        self.job_id = job_id
        self.job = job


class JobFailed(EmpError):
    """The job finished without succeeding: it failed (after its retries) or was cancelled.
    `job` is its final state; `job.error` says why."""

    def __init__(self, job: Job) -> None:
        why = f": {job.error}" if job.error else ""
        super().__init__(f"job {job.id} {job.status}{why}")
        self.job = job
