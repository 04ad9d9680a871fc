"""How `wait` waits: long-polls of GET /jobs/{id}?wait=S until the job finishes.

Each poll is held by the hub until the job finishes or S seconds pass, so a wait costs one
request per S seconds however long the job runs, and sees the end at once. S is kept well
under the hub's limit (HUB_MAX_WAIT_SECONDS, 60 by default); a hub configured below it
refuses with field `wait` and names its limit, which the plan then adopts (a limit of 0
means plain polling, every POLL_SECONDS).
"""

from __future__ import annotations

import re
import time
from typing import Final

from emp import _calls
from emp._calls import Call
from emp.errors import BadRequest
from emp.models import Job

CHUNK_SECONDS: Final = 25.0
POLL_SECONDS: Final = 0.5
_LIMIT = re.compile(r"between 0 and ([0-9.]+) seconds")


class WaitPlan:
    def __init__(self, job_id: str, timeout: float | None) -> None:
        self.job_id = job_id
        self.deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self.chunk = CHUNK_SECONDS
        self.last: Job | None = None
        self._first = True

    def next_call(self) -> Call[Job] | None:
        """The next poll, or None when the time is up (always one poll, even for 0)."""
        remaining = None if self.deadline is None else self.deadline - time.monotonic()
        if remaining is not None and remaining <= 0 and not self._first:
            return None
        self._first = False
        wait = self.chunk if remaining is None else max(0.0, min(self.chunk, remaining))
        return _calls.get_job(self.job_id, wait)

    def pause(self) -> float:
        """Seconds to sleep before the next poll: none while the hub holds the polls."""
        return POLL_SECONDS if self.chunk <= 0 else 0.0

    def adopt_limit(self, error: BadRequest) -> bool:
        """Whether `error` was the hub's wait limit (now adopted) rather than a real fault."""
        found = _LIMIT.search(error.message) if error.field == "wait" else None
        if found is None or float(found.group(1)) >= self.chunk:
            return False  # not a limit, or one adopted already: never loop on it
        self.chunk = float(found.group(1))
        self._first = True  # the refused poll does not count
        return True
