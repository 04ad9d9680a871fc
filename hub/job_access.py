"""Which stored job a caller means by an id, and whether it may see it.

A customer-bound client's chosen ids are stored in its customer's space
(`shared.job.scoped_job_id`: `acme~order-1`), so such a client names its jobs by the id it
chose (`order-1`), by the stored id (`acme~order-1`, as answers and Location headers give it)
or by a generated id (`job-...`, which is never scoped). Other callers name stored ids as
they are.

Visibility is decided from the job's owner (`Broker.owners`: the id, customer and worker
fields, one round trip), never from the loaded job: a foreign job and an unknown id then
cost the same reads and get the same 404, where loading the whole job first made a foreign
job measurably slower to refuse.
"""

from __future__ import annotations

from hub.auth import Principal
from shared.broker import Broker
from shared.job import scoped_job_id
from shared.validation import SCOPE_SEPARATOR


def candidate_ids(principal: Principal, job_id: str) -> list[str]:
    """The stored ids `job_id` may mean for `principal`, most specific first."""
    customer = principal.customer_id
    if customer is None or SCOPE_SEPARATOR in job_id:
        return [job_id]
    return [scoped_job_id(customer, job_id), job_id]


async def visible_id(broker: Broker, principal: Principal, job_id: str) -> str | None:
    """The stored id of the job `principal` means by `job_id`, None when there is no such
    job it may see. Every candidate is read whatever is found, so the work done says
    nothing about other customers' jobs."""
    candidates = candidate_ids(principal, job_id)
    owners = await broker.owners(candidates)
    for candidate, owner in zip(candidates, owners, strict=True):
        if owner is not None and principal.can_see(owner.customer_id):
            return candidate
    return None
