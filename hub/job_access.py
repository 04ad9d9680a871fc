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
from shared.job import scoped_job_id
from shared.pool_set import PoolSet
from shared.pools import POOL_SEPARATOR, pool_of, pooled_id
from shared.validation import SCOPE_SEPARATOR


def candidate_ids(principal: Principal, job_id: str) -> list[str]:
    """The stored ids `job_id` may mean for `principal`, most specific first. A pool's id
    keeps its pool in front (`gpu-eu!acme~order-1`), so the customer's scope goes after
    it: `gpu-eu!order-1` may mean the customer's own `order-1` in pool gpu-eu."""
    customer = principal.customer_id
    pool = pool_of(job_id)
    local = job_id.partition(POOL_SEPARATOR)[2] if POOL_SEPARATOR in job_id else job_id
    if customer is None or SCOPE_SEPARATOR in local:
        return [job_id]
    return [pooled_id(pool, scoped_job_id(customer, local)), job_id]


async def visible_id(pools: PoolSet, principal: Principal, job_id: str) -> str | None:
    """The stored id of the job `principal` means by `job_id`, None when there is no such
    job it may see (or its id names a pool this hub does not serve). Every candidate is
    read whatever is found, so the work done says nothing about other customers' jobs.
    The candidates all name the same pool, the only place the job can be."""
    broker = pools.for_job(job_id)
    if broker is None:
        return None
    candidates = candidate_ids(principal, job_id)
    owners = await broker.owners(candidates)
    for candidate, owner in zip(candidates, owners, strict=True):
        if owner is not None and principal.can_see(owner.customer_id):
            return candidate
    return None
