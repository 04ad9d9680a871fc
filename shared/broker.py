"""The broker API: typed async wrappers over the Lua scripts. Hub and worker use only this.

Every state transition is one script call (shared/lua/); this module validates inputs,
encodes documents and decodes replies. It keeps no state of its own besides the Redis
client, so any number of hubs and workers can use it against one Redis. Reads that are not
part of a transition (listings, statistics, the fleet, the event stream) are the read model
in shared/reads.py, which the Broker exposes as `reads`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import msgspec
import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from shared.broker_replies import (
    CancelResult,
    Claim,
    FailOutcome,
    Fence,
    Head,
    JobOwner,
    NoClaim,
    Rank,
    ReapReport,
    Submitted,
    WorkerState,
    claim_reply,
    fence,
    parse_job,
    peek_reply,
    text,
    wake_reply,
    worker_state,
)
from shared.capabilities import Capabilities
from shared.control_channel import ControlSubscription
from shared.errors import BrokerError, InvalidInput
from shared.group_commit import (
    COMPLETE_IN_FLIGHT,
    COMPLETE_MAX_GROUP,
    SUBMIT_IN_FLIGHT,
    SUBMIT_MAX_GROUP,
    GroupCommit,
)
from shared.job import MAX_EFFECTIVE_PRIORITY, Job, JobRequest
from shared.keys import Keys
from shared.pools import DEFAULT_POOL, pool_prefix, pooled_id
from shared.reads import Reads
from shared.redis_types import RedisClient
from shared.replication import NotReplicated, Wait
from shared.requirements import Requirements, requirement_class
from shared.scripts import Scripts
from shared.settings import BrokerSettings
from shared.validation import check_document
from shared.webhook_queue import WebhookQueue

# The reply types are part of this API: callers import them from here.
__all__ = [
    "Broker",
    "CancelResult",
    "Claim",
    "FailOutcome",
    "Fence",
    "Head",
    "NoClaim",
    "Rank",
    "ReapReport",
    "Submitted",
    "WorkerState",
    "new_job_id",
    "parse_job",
]


# Jobs per submit_batch call: about 3 ms of Redis time, so claims never wait long behind it.
BATCH_SCRIPT_JOBS = 100


def new_job_id() -> str:
    """`job-` and a random (version 4) UUID's hex, as `uuid.uuid4().hex` gives it, made
    without constructing a UUID object: a third of the cost, on every submission."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return f"job-{raw.hex()}"


# Requirement class ids by (service, customer, encoded requirements, preferred models): most
# submissions repeat a handful of documents, and the id (a sorted re-encoding and a SHA-1) is
# a function of exactly these. Bounded: when full it is emptied rather than tracked per entry.
_CLASS_IDS: dict[tuple[str, str, bytes, tuple[str, ...]], str] = {}
_CLASS_IDS_MAX = 4096


def _class_id(request: JobRequest, encoded_requirements: bytes, preferred: tuple[str, ...]) -> str:
    key = (request.service_type, request.customer_id or "", encoded_requirements, preferred)
    found = _CLASS_IDS.get(key)
    if found is None:
        if len(_CLASS_IDS) >= _CLASS_IDS_MAX:
            _CLASS_IDS.clear()
        found = _CLASS_IDS[key] = requirement_class(
            request.service_type, request.customer_id, request.requirements, preferred
        )
    return found


def _sooner_due(result: NoClaim, due: int | None) -> NoClaim:
    """`result` with `due` as its next_due_ms when that is sooner."""
    if due is None or (result.next_due_ms is not None and result.next_due_ms <= due):
        return result
    return msgspec.structs.replace(result, next_due_ms=due)


def _running_json(running: Sequence[tuple[str, str]]) -> str:
    """(customer, isolation) pairs as the scripts read held leases: '' for none."""
    if not running:
        return ""
    return orjson.dumps([{"customer": c, "isolation": i} for c, i in running]).decode()


class Broker:
    """Async, typed access to one pool's job queue (shared/pools.py; shared/pool_set.py
    holds one per pool a process serves). Cheap to construct; share one per process."""

    def __init__(
        self,
        redis: RedisClient,
        settings: BrokerSettings | None = None,
        *,
        pool: str = DEFAULT_POOL,
        handoff: bool = False,
    ) -> None:
        """`handoff`: this broker's claims say that the worker accepts a job handed to it
        while it idles (shared/lua/include/handoff.lua), which `wait_for_work` then returns
        as a Claim. Only for a worker that starts such a claim at once (worker/runtime.py)."""
        self.redis = redis
        self.settings = settings or BrokerSettings()
        self.pool = pool
        cluster = isinstance(redis, RedisCluster)
        self.keys = Keys(pool_prefix(self.settings.prefix, pool, cluster=cluster))
        self._scripts = Scripts(
            redis,
            self.keys,
            events_max=self.settings.events_max,
            retention_ms=self.settings.retention_ms,
            wait=Wait(self.settings.wait_replicas, self.settings.wait_timeout_ms),
        )
        # The scheduling policies' ARGV for the claim scripts, built once ('': strict order).
        self._scheduling = self.settings.scheduling_argument
        self._handoff = handoff
        # Reads that are not state transitions (listings, stats, fleet, clock, events).
        self.reads = Reads(redis, self.keys)
        # Webhook deliveries: the stream's consumer group, retries, dead letter.
        self.webhooks = WebhookQueue(redis, self.keys, self._scripts)
        self._completions = GroupCommit(
            self._complete_and_claim_group,
            max_group=COMPLETE_MAX_GROUP,
            in_flight=COMPLETE_IN_FLIGHT,
        )
        self._submissions: GroupCommit[None, Sequence[str | int | bytes], Any] = GroupCommit(
            self._submit_group, max_group=SUBMIT_MAX_GROUP, in_flight=SUBMIT_IN_FLIGHT
        )

    async def ping(self) -> None:
        """Raise unless Redis answers (readiness checks)."""
        await self.redis.ping()

    # -- submission ---------------------------------------------------------------------

    def _submit_args(
        self,
        request: JobRequest,
        effective_priority: int | None,
        idempotency_key: str | None,
        max_priority: int | None = None,
        preferred: tuple[str, ...] | None = None,
    ) -> list[str | int | bytes]:
        """The submit script's arguments; `preferred`: the request's preferred models when
        the caller found them already."""
        s = self.settings
        request.check_customer()
        payload = check_document(request.payload, "payload", max_bytes=s.max_payload_bytes)
        priority = request.priority if request.priority is not None else 50
        effective = priority if effective_priority is None else effective_priority
        if not 0 <= effective <= MAX_EFFECTIVE_PRIORITY:
            raise InvalidInput("priority", f"effective priority {effective} outside 0..1000")
        job_id = pooled_id(self.pool, request.id or new_job_id())
        idem = ""
        if idempotency_key:
            if len(idempotency_key) > 256:
                raise InvalidInput("Idempotency-Key", "longer than 256 characters")
            idem = hashlib.sha256(idempotency_key.encode()).hexdigest()
        timeout = request.timeout_seconds or s.job_timeout
        max_retries = request.max_retries
        # Documents travel as the bytes they were encoded to: decoding them to str would only
        # have the packer encode them again.
        requirements = msgspec.json.encode(request.requirements)
        fields: list[str | int | bytes] = [
            "service_type", request.service_type,
            "priority", priority,
            "payload", payload,
            "requirements", requirements,
            "max_retries", s.default_max_retries if max_retries is None else max_retries,
            "timeout_ms", int(timeout * 1000),
        ]  # fmt: skip
        if request.customer_id:
            fields += ["customer_id", request.customer_id]
        if request.tags:
            fields += ["tags", orjson.dumps(request.tags).decode()]
        if request.deadline is not None:
            fields += ["deadline", int(request.deadline.timestamp() * 1000)]
        if max_priority is not None:
            # The submitting token's ceiling: re-scoring (aging, urgency) must honour it too.
            fields += ["max_priority", max_priority]
        if request.webhook is not None:
            # Stored with the job so any hub can deliver its events (shared/webhook.py).
            fields += ["webhook", msgspec.json.encode(request.webhook).decode()]
        if preferred is None:
            preferred = request.preferred_models()
        if preferred:
            # The class document's `p` (include/queue.lua), rebuilt from here on retries.
            fields += ["preferred_models", orjson.dumps(preferred)]
        return [job_id, idem, _class_id(request, requirements, preferred), effective, *fields]

    async def submit(
        self,
        request: JobRequest,
        *,
        effective_priority: int | None = None,
        idempotency_key: str | None = None,
        max_priority: int | None = None,
    ) -> Submitted:
        """Queue a job. A repeated `id` or idempotency key returns the original job's id
        with `created=False` and writes nothing. `max_priority` is recorded on the job: the
        ceiling its effective priority keeps when re-scored."""
        preferred = request.preferred_models()
        args = self._submit_args(
            request, effective_priority, idempotency_key, max_priority, preferred
        )
        # Submissions made while SUBMIT_IN_FLIGHT are in flight go together, in one
        # pipeline of separate calls (group commit, shared/group_commit.py).
        reply = await self._submissions.call(None, args)
        if isinstance(reply, Exception):
            raise reply
        return Submitted.from_reply(reply, preferred)

    async def _submit_group(
        self, _key: None, calls: list[Sequence[str | int | bytes]]
    ) -> list[Any]:
        """One submit call per entry: alone, on the direct path; several, in one pipeline,
        each answered with its own reply or error (a call that failed is not retried here,
        and the others stand; unreplicated, each caller's error holds its own reply)."""
        if len(calls) == 1:
            return [await self._scripts.call("submit", *calls[0])]
        try:
            return await self._scripts.call_each("submit", calls)
        except NotReplicated as exc:
            return list(exc.each())

    async def submit_many(
        self,
        requests: Sequence[JobRequest],
        *,
        effective_priorities: Sequence[int | None] | None = None,
        max_priority: int | None = None,
    ) -> list[Submitted]:
        """Queue many jobs in one round trip. All are validated before any is written; each
        job is written exactly as `submit` would, in order. Jobs travel BATCH_SCRIPT_JOBS per
        script call (one call per job cost a reply, a timeout and a parse each on the client,
        which capped batches at about half of what Redis can take), each call sent as soon
        as it is packed (Scripts.call_streamed)."""
        prios = effective_priorities or [None] * len(requests)
        all_args = [
            self._submit_args(r, p, None, max_priority)
            for r, p in zip(requests, prios, strict=True)
        ]

        def calls() -> Iterator[list[str | int | bytes]]:
            for start in range(0, len(all_args), BATCH_SCRIPT_JOBS):
                chunk = all_args[start : start + BATCH_SCRIPT_JOBS]
                flat: list[str | int | bytes] = [len(chunk)]
                for args in chunk:
                    flat += [*args[:4], len(args) - 4, *args[4:]]
                yield flat

        replies = await self._scripts.call_streamed("submit_batch", calls())
        return [
            Submitted.from_reply(reply[i : i + 4])
            for reply in replies
            for i in range(0, len(reply), 4)
        ]

    # -- reading ------------------------------------------------------------------------

    async def owner(self, job_id: str) -> JobOwner | None:
        """Who a job belongs to, without loading its payload or result: the cheap read that
        a visibility check makes before anything else (None: no such job)."""
        found, customer, worker = await self.redis.hmget(
            self.keys.job(job_id), ["id", "customer_id", "worker_id"]
        )
        if found is None:
            return None
        return JobOwner(text(customer) or None, text(worker) or None)

    async def owners(self, job_ids: Sequence[str]) -> list[JobOwner | None]:
        """`owner` of several jobs in one round trip, in the order asked."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self.keys.job(job_id), ["id", "customer_id", "worker_id"])
            rows = await pipe.execute()
        return [
            None if found is None else JobOwner(text(customer) or None, text(worker) or None)
            for found, customer, worker in rows
        ]

    async def lease_count(self, worker_id: str) -> int:
        """How many jobs the worker holds right now."""
        return int(await self.redis.hlen(self.keys.leases(worker_id)))

    async def get(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        return parse_job(raw) if raw else None

    async def get_many(self, job_ids: Iterable[str]) -> list[Job]:
        ids = list(job_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self.keys.job(job_id))
            raws = await pipe.execute()
        return [parse_job(raw) for raw in raws if raw]

    async def queue_position(self, job_id: str) -> int | None:
        """0-based rank among all pending jobs (backing-off retries included), or None."""
        rank = await self.redis.zrank(self.keys.pending, job_id)
        return rank if isinstance(rank, int) else None

    async def pending_count(self) -> int:
        return int(await self.redis.zcard(self.keys.pending))

    # -- workers ------------------------------------------------------------------------

    @staticmethod
    def encode_capabilities(caps: Capabilities) -> bytes:
        return msgspec.json.encode(caps)

    async def register_worker(
        self,
        worker_id: str,
        caps: Capabilities,
        info: Mapping[str, Any] | None = None,
        *,
        lease_timeout: float | None = None,
    ) -> WorkerState:
        """`lease_timeout`: the worker's own (its LEASE_TIMEOUT_SECONDS, which its heartbeat
        interval fits in); default this process's. It is recorded with the worker."""
        lease = self.settings.lease_timeout if lease_timeout is None else lease_timeout
        state = await self._scripts.call(
            "register",
            worker_id,
            int(lease * 1000),
            self.encode_capabilities(caps),
            orjson.dumps(dict(info or {})),
        )
        return worker_state(state)

    async def heartbeat(
        self,
        worker_id: str,
        *,
        status: str = "idle",
        running: Mapping[str, str] | None = None,
        caps: Capabilities | None = None,
        registered_lease: bool = False,
    ) -> list[str]:
        """Renew liveness; returns the ids among `running` (job id -> token) that the worker
        no longer holds and must interrupt. `registered_lease`: renew by the lease timeout
        the worker registered with (the gateway's heartbeats, sent for a worker whose
        LEASE_TIMEOUT_SECONDS is its own), this process's only when it registered none."""
        pairs: list[str] = []
        for job_id, token in (running or {}).items():
            pairs += [job_id, token]
        lease_ms = int(self.settings.lease_timeout * 1000)
        revoked = await self._scripts.call(
            "heartbeat",
            worker_id,
            -lease_ms if registered_lease else lease_ms,
            status,
            self.encode_capabilities(caps) if caps is not None else "",
            int(self.settings.orphan_grace * 1000),
            *pairs,
        )
        return [text(r) or "" for r in revoked]

    async def deregister_worker(self, worker_id: str) -> int:
        """Leave the fleet; jobs still held go back to pending. Returns how many."""
        return int(await self._scripts.call("deregister", worker_id))

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        return int(await self._scripts.call("worker_state", worker_id, state)) == 1

    # -- claiming -----------------------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        caps: Capabilities | bytes,
        *,
        hops: int = 0,
        max_leases: int = 0,
        elsewhere: Sequence[tuple[str, str]] = (),
        floor: Rank | None = None,
    ) -> Claim | NoClaim:
        """Take the highest-priority, oldest pending job this worker can run; nothing
        (reason 'limit') while it holds `max_leases` jobs (0: no cap).

        For a worker serving several pools (worker/pooled_broker.py): `elsewhere` lists the
        (customer, isolation) of the jobs it holds in its other pools, which customer
        isolation counts too; with `floor`, the job is taken only if it ranks no lower, else
        NoClaim('worse') carries the rank of the job that was not taken."""
        encoded = caps if isinstance(caps, bytes) else self.encode_capabilities(caps)
        scheduling = self._scheduling
        extra: list[str | int] = []
        if elsewhere or floor is not None or scheduling or self._handoff:
            extra.append(_running_json(elsewhere))
        if floor is not None:
            extra += [floor.priority, floor.created_at]
        elif scheduling or self._handoff:
            extra += ["", ""]
        if scheduling or self._handoff:
            extra.append(scheduling)
        if self._handoff:
            extra.append("1")
        offset = 0
        due: int | None = None
        # Each call examines a bounded number of classes; a 'more' reply continues the scan
        # in a fresh call, so Redis is never blocked for long and a match deep in the
        # index is still found.
        while True:
            try:
                reply = await self._scripts.call(
                    "claim",
                    worker_id,
                    encoded,
                    self.settings.claim_scan_budget,
                    offset,
                    hops,
                    max_leases,
                    *extra,
                )
            except NotReplicated as exc:
                result = claim_reply(exc.replies[0])
                if isinstance(result, Claim):
                    await self._hand_back(worker_id, result)
                    raise
                reply = exc.replies[0]  # nothing was claimed: nothing to lose
            result = claim_reply(reply)
            if not isinstance(result, NoClaim):
                return result
            if result.reason != "more" or not result.offset:
                return _sooner_due(result, due)
            # A page may have held a job back (fit): its deadline is a time to look again.
            due = _sooner_due(result, due).next_due_ms
            offset, hops = result.offset, 0

    async def peek(
        self, worker_id: str, caps: bytes, *, elsewhere: Sequence[tuple[str, str]] = ()
    ) -> Head | NoClaim:
        """The job `claim` would take now for this worker, and its rank, taking nothing and
        writing nothing (peek.lua); or why there is none ('empty', 'paused', 'draining', with
        when the next retry is due). `elsewhere` as for `claim`."""
        offset = 0
        while True:
            result = peek_reply(
                await self._scripts.call(
                    "peek",
                    worker_id,
                    caps,
                    self.settings.claim_scan_budget,
                    offset,
                    _running_json(elsewhere),
                    self._scheduling,
                )
            )
            if not isinstance(result, NoClaim) or result.reason != "more" or not result.offset:
                return result
            offset = result.offset

    async def wait_for_work(
        self, services: Sequence[str], timeout: float, *, worker_id: str = ""
    ) -> int | Claim | None:
        """Block until a wake-up token for one of `services` arrives, or `timeout` passes.
        With `worker_id`, a token on that worker's own doorbell wakes it too: the `fit`
        policy wakes the idle worker it leaves a job to (include/idle_workers.lua), and a
        submission hands a job to an idle worker whose claims accept handoffs there
        (include/handoff.lua).

        Returns the token's hop count (pass it to `claim`), a Claim for a job handed to
        `worker_id` (leased to it already: run it as a claimed job), or None on timeout.
        The connection used must not have a socket timeout shorter than `timeout`."""
        if not services:
            return None
        popped = await self._scripts.command(
            "BLPOP", *self.wake_keys(services, worker_id), max(timeout, 0.01)
        )
        if popped is None:
            return None
        return wake_reply(popped[1])

    def wake_keys(self, services: Sequence[str], worker_id: str = "") -> list[str]:
        """The lists a worker waiting for work blocks on: its services' doorbells, then its
        own (all under the pool's prefix, so one slot on a Redis Cluster)."""
        keys = [self.keys.notify(s) for s in services]
        return [*keys, self.keys.wake(worker_id)] if worker_id else keys

    def control_subscription(self, worker_id: str) -> ControlSubscription:
        """A subscription to `worker_id`'s cancel signals; the client must not have a socket
        timeout (the channel is silent for long stretches)."""
        return ControlSubscription(self.redis, self.keys.control(worker_id))

    # -- reporting (fenced) -------------------------------------------------------------

    async def progress(
        self, worker_id: str, job_id: str, token: str, progress: float, message: str = ""
    ) -> Fence:
        value = min(max(float(progress), 0.0), 100.0)
        reply = await self._scripts.call(
            "progress", worker_id, job_id, token, f"{value:g}", message[:1000]
        )
        return fence(reply[0])

    async def complete(self, worker_id: str, job_id: str, token: str, result: Any) -> Fence:
        encoded = check_document(result, "result", max_bytes=self.settings.max_result_bytes)
        reply = await self._scripts.call("complete", worker_id, job_id, token, encoded)
        return fence(reply[0])

    async def complete_and_claim(
        self,
        worker_id: str,
        job_id: str,
        token: str,
        result: Any,
        caps: bytes,
        *,
        max_leases: int = 0,
    ) -> tuple[Fence, Claim | NoClaim]:
        """`complete`, then `claim` for the same worker, in one round trip: a worker that
        drains a queue pays one call per job instead of two. Calls for one worker made while
        COMPLETE_IN_FLIGHT of its calls are in flight wait, and go together in the next call
        (group commit, shared/group_commit.py), each answered as if it had been sent alone. A
        'more' answer (the scan budget ran out) comes back as NoClaim(reason='more'): call `claim`
        to continue."""
        encoded = check_document(result, "result", max_bytes=self.settings.max_result_bytes)
        return await self._completions.call((worker_id, caps, max_leases), (job_id, token, encoded))

    async def _complete_and_claim_group(
        self, key: tuple[str, bytes, int], entries: list[tuple[str, str, bytes]]
    ) -> list[tuple[Fence, Claim | NoClaim]]:
        worker_id, caps, max_leases = key
        try:
            replies = await self._scripts.call(
                "complete_claim",
                worker_id,
                caps,
                self.settings.claim_scan_budget,
                max_leases,
                self._scheduling,
                "1" if self._handoff else "",
                *(arg for entry in entries for arg in entry),
            )
        except NotReplicated as exc:
            for reply in exc.replies[0]:
                follow_up = claim_reply(reply[1:])
                if isinstance(follow_up, Claim):
                    await self._hand_back(worker_id, follow_up)
            raise
        return [(fence(reply[0]), claim_reply(reply[1:])) for reply in replies]

    async def _hand_back(self, worker_id: str, claim: Claim) -> None:
        """Return a claim that replicas did not acknowledge (shared/replication.py): its
        token could be handed out again after a failover, so it is never run. Best effort:
        when even this fails, the next heartbeat returns the lease as orphaned."""
        with contextlib.suppress(RedisError):
            await self.release(worker_id, claim.job.id, claim.token, "not replicated")

    async def fail(
        self, worker_id: str, job_id: str, token: str, error: str, *, retryable: bool = True
    ) -> FailOutcome:
        s = self.settings
        reply = await self._scripts.call(
            "fail",
            worker_id,
            job_id,
            token,
            error[:4000],
            "1" if retryable else "0",
            int(s.retry_backoff_base * 1000),
            int(s.retry_backoff_cap * 1000),
            random.random(),
            int(s.avoid_window * 1000),
        )
        outcome = text(reply[0])
        if outcome not in ("retrying", "failed", "stale", "cancelled"):
            raise BrokerError(f"fail: unexpected reply {reply!r}")
        return cast(FailOutcome, outcome)

    async def release(
        self, worker_id: str, job_id: str, token: str, reason: str = "worker stopping"
    ) -> Fence:
        reply = await self._scripts.call("release", worker_id, job_id, token, reason)
        return fence(reply[0])

    # -- operators ----------------------------------------------------------------------

    async def cancel(self, job_id: str, reason: str = "cancelled") -> CancelResult:
        reply = await self._scripts.call("cancel", job_id, reason[:1000])
        outcome = text(reply[0])
        if outcome == "cancelled":
            return CancelResult(
                "cancelled", text(reply[1]), text(reply[2]) if len(reply) > 2 else None
            )
        if outcome == "unchanged":
            return CancelResult("unchanged", text(reply[1]))
        return CancelResult("missing")

    async def retry(self, job_id: str) -> Literal["ok", "not_failed", "missing"]:
        """Send a failed (dead-letter) job back to the queue with fresh attempts."""
        outcome = text((await self._scripts.call("retry", job_id))[0])
        if outcome not in ("ok", "not_failed", "missing"):
            raise BrokerError(f"retry: unexpected reply {outcome!r}")
        return cast(Literal["ok", "not_failed", "missing"], outcome)

    async def reap(self, limit: int = 500) -> ReapReport:
        """One maintenance pass: dead workers' jobs, timeouts, due retries."""
        s = self.settings
        promoted, recovered, timed_out = await self._scripts.call(
            "reap",
            limit,
            int(s.retry_backoff_base * 1000),
            int(s.retry_backoff_cap * 1000),
            random.random(),
            int(s.avoid_window * 1000),
        )
        rec = [text(x) or "" for x in recovered]
        tmo = [text(x) or "" for x in timed_out]
        return ReapReport(
            promoted=int(promoted),
            recovered=[(rec[i], rec[i + 1], rec[i + 2]) for i in range(0, len(rec), 3)],
            timed_out=[(tmo[i], tmo[i + 1]) for i in range(0, len(tmo), 2)],
        )

    async def prune_libraries(self) -> list[str]:
        """Delete the Lua libraries that other versions of this code loaded into this Redis
        (shared/scripts.py Scripts.prune_libraries); returns their names. Hubs call it when
        they start."""
        return await self._scripts.prune_libraries()

    async def publish_policy(
        self, publisher: str, weights: Mapping[str, float] | None = None
    ) -> dict[str, str] | None:
        """Publish this process's job policy (retention, retry backoff, avoid window) as the
        fleet's: every script follows it, whichever worker runs it (hubs call this), with
        the fair-share `weights` (customer -> weight, "*" for the rest; none: everyone
        weighs 1). Returns what was published before, None when nothing was."""
        s = self.settings
        pairs = [x for customer, w in (weights or {}).items() for x in (customer, f"{w:g}")]
        before = await self._scripts.call(
            "publish_policy",
            s.retention_ms,
            int(s.retry_backoff_base * 1000),
            int(s.retry_backoff_cap * 1000),
            int(s.avoid_window * 1000),
            publisher,
            *pairs,
        )
        names = ("retention_ms", "backoff_ms", "backoff_max_ms", "avoid_ms", "by")
        found = {n: text(v) for n, v in zip(names, before, strict=True) if v is not None}
        return {n: v for n, v in found.items() if v is not None} or None

    def policy_values(self) -> dict[str, str]:
        """The values `publish_policy` writes, as Redis returns them."""
        s = self.settings
        return {
            "retention_ms": str(s.retention_ms),
            "backoff_ms": str(int(s.retry_backoff_base * 1000)),
            "backoff_max_ms": str(int(s.retry_backoff_cap * 1000)),
            "avoid_ms": str(int(s.avoid_window * 1000)),
        }

    async def cleanup(self) -> dict[str, int]:
        """Trim finished-job registries to the retention window."""
        counts = await self._scripts.call("cleanup")
        return dict(zip(("completed", "failed", "cancelled"), map(int, counts), strict=True))

    async def expire_unclaimed(self, max_age: float, limit: int = 500) -> list[str]:
        """Fail pending jobs no worker has claimed within `max_age` seconds of submission
        ("no worker took it"); returns their ids. Idempotent across hubs."""
        expired = await self._scripts.call("expire_unclaimed", int(max_age * 1000), limit)
        return [text(x) or "" for x in expired]

    async def sample_depth(self, depths: Mapping[str, int]) -> bool:
        """Record the claimable pending jobs per service (already folded by the caller to a
        bounded set) as this minute's sample; False when the minute has one already (another
        hub took it): one sample per minute whoever calls."""
        pairs: list[str | int] = []
        for service, count in depths.items():
            pairs += [service, int(count)]
        return int(await self._scripts.call("sample_depth", *pairs)) == 1

    async def take_request(self, bucket: str, rate: float, burst: int) -> int:
        """Take one request from the token bucket `bucket` (shared by every hub); returns 0
        when the request may go ahead, else how many ms until it could."""
        allowed, wait_ms = await self._scripts.call("rate_limit", bucket, repr(rate), burst, 1)
        return 0 if int(allowed) == 1 else max(1, int(wait_ms))

    async def reprioritize(self, priorities: Mapping[str, int]) -> int:
        """Set the effective priority of pending jobs (job id -> 0..1000); returns how many
        were still pending. FIFO order among equal priorities is kept."""
        pairs: list[str | int] = []
        for job_id, priority in priorities.items():
            if not 0 <= priority <= MAX_EFFECTIVE_PRIORITY:
                raise InvalidInput("priority", f"effective priority {priority} outside 0..1000")
            pairs += [job_id, priority]
        if not pairs:
            return 0
        return int(await self._scripts.call("reprioritize", *pairs))

    async def lua_mismatch(
        self,
        service_type: str,
        customer_id: str,
        requirements: Requirements,
        caps: Capabilities,
        running: Sequence[tuple[str, str]] = (),
    ) -> str | None:
        """Run the claim's Lua matcher on documents (for tests and diagnostics)."""
        reply = await self._scripts.call(
            "match",
            service_type,
            customer_id,
            msgspec.json.encode(requirements),
            self.encode_capabilities(caps),
            orjson.dumps([{"customer": c, "isolation": i} for c, i in running])
            if running
            else "[]",
        )
        return text(reply) or None
