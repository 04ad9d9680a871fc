"""A worker that serves several pools (POOLS=gpu-eu,gpu-us): the broker calls of
worker/links.py's `WorkerBroker`, over one Broker per pool (shared/pool_set.py).

What goes where:

- Registration, heartbeats, operator state (pause, drain, resume) and deregistration go to
  every pool, so the worker is listed, alive and in the same state in each. A heartbeat
  tells each pool only of the jobs the worker holds there, and returns the union of what the
  pools revoke.
- A report (progress, complete, fail, release) or a cancel goes to the pool its job id
  names (`pool_of`): the only place the job can be.
- Wake-ups: on a single Redis one BLPOP waits on every pool's doorbells at once. On a Redis
  Cluster the pools' keys live in different slots, which one BLPOP cannot span, so one BLPOP
  per pool runs concurrently and the first answer wins; the others are cancelled, and
  redis-py drops a connection whose blocking command was cancelled (a reconnect on the
  next wait, nothing more). A token such a wait popped just before its cancel is lost, as if
  nobody had been idle: the doorbell is a hint, and IDLE_POLL_SECONDS bounds the cost.
  Tokens several waits did bring back are rung again for other idle workers.
- Cancel signals: one subscription on every pool's control channel.

Claims across pools. Within a pool the claim script keeps the order exact (priority, then
FIFO). Across pools the worker first looks at every pool: `peek.lua` names the job the claim
would take there, writing nothing, with its rank (effective priority, then submission
millisecond: unlike the per-pool FIFO sequence these compare between pools). All pools are
peeked at once, one round trip. The worker then claims in the pool whose head ranks best,
with a floor: the best head among the other pools. The claim script takes its best job only
if it ranks at least that high; otherwise (someone took the peeked job, and what is left
there ranks lower) it takes nothing and answers with the rank of its new best, and the
worker chooses again from what it now knows. An empty answer (the pool emptied) is the same.
A tie in rank (same priority, same millisecond) goes to the pool listed first in POOLS.

The bound on priority inversion. Rank jobs by effective priority (higher first), then
submission time in ms (earlier first), then the order of POOLS. When this worker claims job J
from pool A, no other pool B it serves had, at the worker's last look at B, a job this worker
could run ranked above J. Every look is part of the same claim: the peeks at its start, then
the answer of each pool it tried (a 'worse' with that pool's new best, or empty), so a look
is at most as old as the claim itself (two round trips; one more per race lost to another
worker). A job of B ranked above J is passed over only if it became claimable in B after that
look (submitted, released, reprioritized, a retry come due, or no longer blocked by customer
isolation), and only once: the next claim looks again. Within A the order is exact as
always. After 2 x pools + 2 lost races the claim gives up, taking nothing, and the worker
claims again at once (reason 'contended'): it never takes a worse job to end the contest.
The bound is off by one job only where peek.lua says the peek and the claim can differ (a
class whose first 8 jobs the worker all avoids).

After a job completes, the single-pool worker completes and claims in one call
(complete_claim.lua). In one pool that is exact; across pools it would favour the pool that
just finished. Here the completion and the peeks of the other pools share one round trip
(the completion changes nothing another pool's peek reads), then the finishing pool is
claimed from with the others' best as its floor: two round trips when it still holds the
best job, three when another pool does; the same bound holds.

Claims are serialised within the worker (a lock): the claim loop and the completions of its
running jobs would otherwise claim in two pools at once, and customer isolation, which the
claim script checks against the worker's leases, cannot see leases in another pool. Each
claim and peek is therefore told what the worker holds in its other pools (customer and
isolation of each job), kept here from the claims and reports this object makes.

Costs. A worker with one pool does not use this class: RedisLink gives it a plain Broker,
one round trip per claim, as always. Serving several pools a claim costs two round trips
(all peeks at once, then the claim), a completion with its next claim two or three, and
each heartbeat one call per pool (at once). Peeking runs the same search as the claim, so
Redis does about twice the matching work for each claimed job.

A pool that cannot be reached. On a Redis Cluster each pool may live on a primary of its
own, and when one primary fails its pools have no primary for seconds (until a replica is
elected) while the others' are fine. One such pool must not stop the worker in the others:
a peek, a claim or a wait for work that cannot reach a pool leaves that pool out (its look
is NoClaim('unreachable')) and goes on with the rest, and the pool is left out of claims
for UNREACHABLE_RETRY seconds, then looked at again; a completion's report never fails
because another pool's peek did. Only when no pool can be reached does the call raise, as
with one pool, and the worker backs off as for any outage. Each pool logs its own outage
(one line when it begins, one when it ends). Heartbeats still go to every pool and raise if
one failed (the others have their beat all the same: asyncio.gather lets them finish).

A wake-up passed on: a claim with hops passes a wake-up this worker cannot use on to another
idle worker. Here, when no pool has a job for this worker and the wake-up came from pool W,
W's claim is called with the hops (it claims if a job arrived since the peek, else it passes
the wake-up on): one more round trip, only on a wasted wake-up. A wake-up from W used for a
better job of another pool is not passed on, as within one pool a wake-up for one service
used for a better job of another is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from shared.broker import Broker
from shared.broker_replies import (
    CancelResult,
    Claim,
    FailOutcome,
    Fence,
    Head,
    NoClaim,
    Rank,
    WorkerState,
    text,
)
from shared.capabilities import Capabilities
from shared.control_channel import ControlSubscription
from shared.errors import BrokerError
from shared.job import Job
from shared.outage import Outage
from shared.pool_set import PoolSet
from shared.pools import pool_of
from shared.redis_client import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

UNREACHABLE: Final = "unreachable"  # a NoClaim reason: the pool's Redis did not answer
# How long a pool that could not be reached is left out of claims: a dead node then costs one
# failed attempt (a refused connect and redis-py's retries, a few hundred ms) per interval
# and pool, not one per claim, and a pool back after a failover is looked at within it.
UNREACHABLE_RETRY: Final = 1.0

# What one pool's last look said: its best job's rank, why it has none (NoClaim), or
# nothing yet (None: not looked at since the worker's last claim).
Look = Rank | NoClaim | None


class PooledBroker:
    """The calls of a worker serving every pool of `pools`; `waits` holds the same pools on
    the client for blocking calls (no read timeout: waits for work and the control channel),
    `pools` itself when None. `per_pool_waits` picks the wait used on a Redis Cluster (one
    BLPOP per pool); by default it follows the client."""

    def __init__(
        self, pools: PoolSet, waits: PoolSet | None = None, *, per_pool_waits: bool | None = None
    ) -> None:
        self.pools = pools
        self.waits = waits or pools
        first = next(iter(self.waits))
        self._per_pool_waits = (
            isinstance(first.redis, RedisCluster) if per_pool_waits is None else per_pool_waits
        )
        self._claiming = asyncio.Lock()
        # Pools that could not be reached: until when (time.monotonic()) claims leave them out.
        self._down: dict[str, float] = {}
        self._outages = {name: Outage(f"Redis (pool {name})", logger) for name in self.pools.names}
        # Jobs this worker holds, by id: (customer, isolation), for the claims in other pools.
        self._held: dict[str, tuple[str, str]] = {}
        # The pool whose doorbell ended the last wait, for passing a wasted wake-up on.
        self._woken: str | None = None

    # -- the fleet: every pool ----------------------------------------------------------

    async def register_worker(
        self, worker_id: str, caps: Capabilities, info: Mapping[str, Any] | None = None
    ) -> WorkerState:
        states = await asyncio.gather(
            *(b.register_worker(worker_id, caps, info) for b in self.pools)
        )
        return combined_state(states)

    async def heartbeat(
        self,
        worker_id: str,
        *,
        status: str = "idle",
        running: Mapping[str, str] | None = None,
        caps: Capabilities | None = None,
    ) -> list[str]:
        """Each pool hears of the jobs held there only: a pool revokes every reported job
        it holds no lease for, and returns its leases that go unreported (orphans)."""
        by_pool: dict[str, dict[str, str]] = {name: {} for name in self.pools.names}
        for job_id, token in (running or {}).items():
            by_pool.setdefault(pool_of(job_id), {})[job_id] = token
        revoked = await asyncio.gather(
            *(
                b.heartbeat(worker_id, status=status, running=by_pool[b.pool], caps=caps)
                for b in self.pools
            )
        )
        return [job_id for ids in revoked for job_id in ids]

    async def deregister_worker(self, worker_id: str) -> int:
        released = await asyncio.gather(*(b.deregister_worker(worker_id) for b in self.pools))
        self._held.clear()
        return sum(released)

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        known = await asyncio.gather(*(b.set_worker_state(worker_id, state) for b in self.pools))
        return all(known)

    # -- reports: the job's pool --------------------------------------------------------

    def _of(self, job_id: str) -> Broker:
        broker = self.pools.for_job(job_id)
        if broker is None:
            raise BrokerError(f"job {job_id!r} is of pool {pool_of(job_id)!r}, not served here")
        return broker

    async def progress(
        self, worker_id: str, job_id: str, token: str, progress: float, message: str = ""
    ) -> Fence:
        return await self._of(job_id).progress(worker_id, job_id, token, progress, message)

    async def complete(self, worker_id: str, job_id: str, token: str, result: Any) -> Fence:
        fence = await self._of(job_id).complete(worker_id, job_id, token, result)
        self._held.pop(job_id, None)
        return fence

    async def fail(
        self, worker_id: str, job_id: str, token: str, error: str, *, retryable: bool = True
    ) -> FailOutcome:
        outcome = await self._of(job_id).fail(worker_id, job_id, token, error, retryable=retryable)
        self._held.pop(job_id, None)
        return outcome

    async def release(
        self, worker_id: str, job_id: str, token: str, reason: str = "worker stopping"
    ) -> Fence:
        fence = await self._of(job_id).release(worker_id, job_id, token, reason)
        self._held.pop(job_id, None)
        return fence

    async def cancel(self, job_id: str, reason: str = "cancelled") -> CancelResult:
        return await self._of(job_id).cancel(job_id, reason)

    # -- claims across pools ------------------------------------------------------------

    async def claim(
        self, worker_id: str, caps: Capabilities | bytes, *, hops: int = 0
    ) -> Claim | NoClaim:
        encoded = caps if isinstance(caps, bytes) else Broker.encode_capabilities(caps)
        names = self.pools.names
        errors: list[Exception] = []
        async with self._claiming:
            # Every pool left out would leave nothing to try: try them all, so that the
            # error raised below is this call's own.
            skip = not all(self._left_out(name) for name in names)
            looks = await self._peek(worker_id, encoded, names, errors, skip_down=skip)
            woken = self._woken if hops > 0 else None
            result = await self._claim_across(worker_id, encoded, looks, woken, hops, errors)
        if isinstance(result, NoClaim) and errors and all(map(_is_unreachable, looks.values())):
            raise errors[0]  # no pool answered: Redis is unreachable, as with one pool
        return result

    async def complete_and_claim(
        self, worker_id: str, job_id: str, token: str, result: Any, caps: bytes
    ) -> tuple[Fence, Claim | NoClaim]:
        """`complete`, then the claim across pools: the completion shares its round trip
        with the peeks of the other pools; the finishing pool is claimed from with their
        best as its floor (see the module docstring)."""
        finishing = self._of(job_id)
        others = tuple(name for name in self.pools.names if name != finishing.pool)
        async with self._claiming:
            # The job is over for this worker whatever the fence says: not held elsewhere.
            held = self._held.pop(job_id, None)
            errors: list[Exception] = []
            try:
                # Only the completion can fail this call (and be retried): _peek raises
                # nothing for a pool it cannot reach.
                fence, looks = await asyncio.gather(
                    finishing.complete(worker_id, job_id, token, result),
                    self._peek(worker_id, caps, others, errors, skip_down=True),
                )
            except BaseException:
                if held is not None:
                    self._held[job_id] = held  # not delivered: the caller retries
                raise
            looks[finishing.pool] = None
            return fence, await self._claim_across(worker_id, caps, looks, None, 0, errors)

    async def _peek(
        self,
        worker_id: str,
        caps: bytes,
        names: Sequence[str],
        errors: list[Exception],
        *,
        skip_down: bool,
    ) -> dict[str, Look]:
        """Every pool in `names` at once: the rank of the job a claim would take there, or
        why there is none. A pool that does not answer (or, with `skip_down`, was left out
        for that lately) is NoClaim('unreachable'); its error is added to `errors`."""
        looks: dict[str, Look] = {}
        brokers = []
        for name in names:
            left_out = self._left_out(name) if skip_down else None
            if left_out is not None:
                looks[name] = left_out
            else:
                brokers.append(self.pools.brokers[name])
        heads = await asyncio.gather(
            *(b.peek(worker_id, caps, elsewhere=self._elsewhere(b.pool)) for b in brokers),
            return_exceptions=True,
        )
        for b, head in zip(brokers, heads, strict=True):
            if isinstance(head, TRANSIENT_ERRORS):
                looks[b.pool] = self._unreachable(b.pool, "peek", head, errors)
            elif isinstance(head, BaseException):
                raise head
            else:
                self._reached(b.pool)
                looks[b.pool] = head.rank if isinstance(head, Head) else head
        return looks

    def _left_out(self, pool: str) -> NoClaim | None:
        """NoClaim('unreachable') while `pool` is left out of claims, else None."""
        until = self._down.get(pool)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            return None
        return NoClaim(UNREACHABLE, int((time.time() + left) * 1000))

    def _unreachable(
        self, pool: str, who: str, exc: BaseException, errors: list[Exception]
    ) -> NoClaim:
        """`pool` did not answer: leave it out of claims for UNREACHABLE_RETRY seconds. Its
        NoClaim says when to look again (local time, as 'contended')."""
        assert isinstance(exc, Exception)  # TRANSIENT_ERRORS are all Exceptions
        errors.append(exc)
        self._outages[pool].failed(who, exc)
        self._down[pool] = time.monotonic() + UNREACHABLE_RETRY
        return NoClaim(UNREACHABLE, int((time.time() + UNREACHABLE_RETRY) * 1000))

    def _reached(self, pool: str) -> None:
        if self._down.pop(pool, None) is not None:
            self._outages[pool].recovered()

    async def _claim_across(
        self,
        worker_id: str,
        caps: bytes,
        looks: dict[str, Look],
        woken: str | None,
        hops: int,
        errors: list[Exception],
    ) -> Claim | NoClaim:
        """Claim by the `looks` (updated as pools answer). A pool whose claim cannot reach
        it is marked unreachable in `looks` (its error added to `errors`) and the others are
        tried: a claim that broke after it was sent may have taken a job, which the next
        heartbeat hands back as orphaned, as after any lost reply."""
        # Each retry follows another worker's claim in the pool chosen (it took the job seen
        # there), so the loop ends; the bound keeps one busy pool from holding a claim long.
        for _ in range(2 * len(looks) + 2):
            choice = choose(looks, self.pools.names)
            if choice is None:
                break
            pool, floor = choice
            try:
                result = await self.pools.brokers[pool].claim(
                    worker_id, caps, elsewhere=self._elsewhere(pool), floor=floor
                )
            except TRANSIENT_ERRORS as exc:
                looks[pool] = self._unreachable(pool, "claim", exc, errors)
                continue
            self._reached(pool)
            if isinstance(result, Claim):
                self._hold(result.job)
                return result
            looks[pool] = result.head if result.reason == "worse" else result
        else:
            # Lost every race: come back at once rather than wait for a doorbell.
            return NoClaim("contended", int(time.time() * 1000))
        if woken is not None and not _is_unreachable(looks.get(woken)):
            # Woken for work no pool has for this worker: W's claim passes the wake-up on
            # (or takes a job that arrived since the peek; nothing else can rank above it).
            try:
                result = await self.pools.brokers[woken].claim(
                    worker_id, caps, hops=hops, elsewhere=self._elsewhere(woken)
                )
            except TRANSIENT_ERRORS as exc:
                result = self._unreachable(woken, "claim", exc, errors)
            if isinstance(result, Claim):
                self._hold(result.job)
                return result
            looks[woken] = result
        return nothing_claimable([look for look in looks.values() if isinstance(look, NoClaim)])

    def _hold(self, job: Job) -> None:
        self._held[job.id] = (job.customer_id or "", job.requirements.customer_isolation)

    def _elsewhere(self, pool: str) -> list[tuple[str, str]]:
        """What this worker holds outside `pool`: customer isolation counts it there too."""
        return [held for job_id, held in self._held.items() if pool_of(job_id) != pool]

    # -- waiting for work ---------------------------------------------------------------

    async def wait_for_work(
        self, services: Sequence[str], timeout: float, *, worker_id: str = ""
    ) -> int | None:
        """Block until a wake-up token for one of `services`, or for `worker_id` itself,
        arrives in any pool, or `timeout` passes; the token's hop count, or None on
        timeout."""
        if not services:
            return None
        if self._per_pool_waits:
            return await self._wait_each(services, timeout, worker_id)
        pool_of_key = {k: b.pool for b in self.waits for k in b.wake_keys(services, worker_id)}
        any_redis = next(iter(self.waits)).redis
        popped = await any_redis.blpop(list(pool_of_key), timeout=max(timeout, 0.01))
        if popped is None:
            return None
        self._woken = pool_of_key[text(popped[0]) or ""]
        return int(text(popped[1]) or "0")

    async def _wait_each(
        self, services: Sequence[str], timeout: float, worker_id: str
    ) -> int | None:
        """One BLPOP per pool, at once (a Redis Cluster: each pool's keys are in one slot).
        A wait that fails (its pool unreachable: a failover) leaves the others waiting; the
        error is raised only when every wait failed."""
        waits = [asyncio.create_task(_pop(b, services, timeout, worker_id)) for b in self.waits]
        try:
            pending: set[asyncio.Task[Any]] = set(waits)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.exception() is None and t.result() is not None for t in done):
                    break
        finally:
            for task in waits:
                task.cancel()
            # Let the cancelled waits unwind: redis-py drops their connections.
            await asyncio.gather(*waits, return_exceptions=True)
        answered = [t for t in waits if t.done() and not t.cancelled()]
        popped = [token for t in answered if t.exception() is None and (token := t.result())]
        if not popped:
            failed = [error for t in answered if (error := t.exception()) is not None]
            if failed and len(failed) == len(waits):
                raise failed[0]
            return None
        (broker, _, hops), *extra = popped
        for other, key, value in extra:
            # Several pools rang at once: one token is ours, the others wake someone else.
            with contextlib.suppress(RedisError, OSError):  # a hint: best effort
                await other.redis.lpush(key, value)
        self._woken = broker.pool
        return int(text(hops) or "0")

    def control_subscription(self, worker_id: str) -> ControlSubscription:
        """One subscription on this worker's control channel in every pool."""
        first, *rest = [b.keys.control(worker_id) for b in self.waits]
        return ControlSubscription(next(iter(self.waits)).redis, first, *rest)


async def _pop(
    broker: Broker, services: Sequence[str], timeout: float, worker_id: str
) -> tuple[Broker, str, bytes | str] | None:
    """One pool's BLPOP: (the pool's broker, the key, the token), or None on timeout."""
    popped = await broker.redis.blpop(
        broker.wake_keys(services, worker_id), timeout=max(timeout, 0.01)
    )
    if popped is None:
        return None
    return broker, text(popped[0]) or "", popped[1]


def _is_unreachable(look: Look) -> bool:
    return isinstance(look, NoClaim) and look.reason == UNREACHABLE


def choose(looks: Mapping[str, Look], order: Sequence[str]) -> tuple[str, Rank | None] | None:
    """Where to claim next, with which floor: a pool not looked at yet first (its floor is
    the best head seen elsewhere), else the pool with the best head (its floor, the second
    best). None when no pool can have a job. A tie in rank goes to the pool listed first in
    `order`: against a floor from a pool listed before it, a pool must rank strictly higher,
    which in whole milliseconds is at least as high as one millisecond earlier."""
    ranked = sorted(
        (look, order.index(pool), pool) for pool, look in looks.items() if isinstance(look, Rank)
    )
    unknown = [pool for pool in order if pool in looks and looks[pool] is None]
    if unknown:
        target, rest = unknown[0], ranked
    elif ranked:
        target, rest = ranked[0][2], ranked[1:]
    else:
        return None
    if not rest:
        return target, None
    floor, floor_index, _ = rest[0]
    if floor_index < order.index(target):
        floor = Rank(floor.neg_priority, floor.created_at - 1)
    return target, floor


def combined_state(states: Sequence[WorkerState]) -> WorkerState:
    """The operator state of a worker over its pools: active where any pool lets it claim."""
    if "active" in states:
        return "active"
    return "draining" if "draining" in states else "paused"


def nothing_claimable(answers: Sequence[NoClaim]) -> NoClaim:
    """One answer for 'no pool has a job': paused or draining only when every pool says so
    (else the worker idles and claims again); the earliest next retry of any pool."""
    reasons = {a.reason for a in answers}
    if answers and reasons <= {"paused", "draining"}:
        return NoClaim("draining" if "draining" in reasons else "paused", None)
    due = [a.next_due_ms for a in answers if a.next_due_ms is not None]
    return NoClaim("empty", min(due) if due else None)
