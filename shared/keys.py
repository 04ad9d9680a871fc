"""Every Redis key and channel emp-redis uses, in one place.

A prefix precedes all names: REDIS_KEY_PREFIX, then the pool's Redis Cluster hash tag
(`{gpu-eu}:`, shared/pools.py), so every key of one pool lands in one slot, which the Lua
scripts need: they derive per-job and
per-worker key names from the prefix (passed as ARGV[1]) and touch them in one call. The
scripts build every name with the table in `shared/lua/include/keys.lua`, which mirrors this
class member for member; `tests/integration/test_lua_keys.py` holds the two equal.

job:{id}                      HASH    the job (shared.job.Job fields; JSON where structured)
jobs:pending                  ZSET    every pending job id (backing-off retries too), by score
jobs:seq                      STRING  submission sequence: FIFO within a priority
jobs:tokens                   STRING  claim token sequence (fencing tokens)
jobs:delayed                  ZSET    retries backing off, scored by the ms they become due
jobs:active                   ZSET    active job ids, scored by their execution deadline (ms)
jobs:active:{workerId}        HASH    job id -> lease "token|customer|isolation|claimed_ms"
jobs:unclaimed                ZSET    pending jobs no worker has claimed yet, by submission ms
fleet                         HASH    the fleet's job policy as the hubs publish it: retention_ms,
                                      backoff_ms, backoff_max_ms, avoid_ms, by (publishing hub)
jobs:{completed,failed,cancelled}
                              ZSET    finished job ids by finish time (failed = dead letter)
class:{classId}               ZSET    the claimable jobs of one requirement class, by score
classes                       HASH    class id -> {"s": service, "c": customer, "r": reqs,
                                      "p": preferred models, when the jobs prefer some}
classes:{service}             ZSET    class ids of a service, scored by their head job
classes:{service}:{customer}  ZSET    the same, per customer (strict, loose-locked workers)
workers                       ZSET    worker id -> liveness deadline ms (heartbeat renews it)
worker:{workerId}             HASH    capabilities, status, state, timestamps, counters; while
                                      idle, idle_in (services, JSON) and idle_caps (JSON)
notify:{service}              LIST    wake-up tokens idle workers block on (BLPOP)
idle:{service}                ZSET    idle workers offering the service, by size (the `fit`
                                      policy; shared/lua/include/idle_workers.lua)
wake:{workerId}               LIST    wake-up tokens for one worker (BLPOP beside notify:*)
warm:{service}:{model}        ZSET    idle workers of the service with the model warm whose
                                      claims apply `affinity`, by size: a job preferring the
                                      model wakes one of them (idle_workers.lua wake_warm)
classes.verdicts:{sha1(caps)} HASH    class id -> '1' (this capability document can run the
                                      class's jobs, leases aside) or '0': the claim scan's
                                      memo of the matcher (include/find_job.lua), expiring
idem:{sha256(key)}            STRING  idempotency key -> job id (expires with retention)
events                        STREAM  every job and worker event (capped)
stats:{minute}                HASH    per-minute counters, wait histogram, depth sample
                                      (shared/minute_stats.py)
control:{workerId}            PUBSUB  "cancel <jobId>" signals to one worker
ratelimit:{sha256(token)}     HASH    a client token's request bucket: tokens left, last refill ms
webhook:{deliveryId}          HASH    a webhook delivery being retried or dead-lettered (url, body,
                              attempts, last error, status; TTL once dead-lettered)
webhooks:due                  ZSET    deliveries waiting for their next attempt, by due ms (a hub
                              sending one pushes its score on by a lease)
webhooks:failed               ZSET    dead-lettered deliveries by the time they failed
gateway:grants                HASH    sha256(gateway token) -> the worker's grant (JSON)
gateway:workers               HASH    worker id -> the digest of its current gateway token
gateway:revoked               PUBSUB  worker ids whose gateway token was revoked
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = ""

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def pending(self) -> str:
        return f"{self.prefix}jobs:pending"

    @property
    def seq(self) -> str:
        return f"{self.prefix}jobs:seq"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}jobs:tokens"

    @property
    def delayed(self) -> str:
        return f"{self.prefix}jobs:delayed"

    @property
    def active(self) -> str:
        return f"{self.prefix}jobs:active"

    @property
    def unclaimed(self) -> str:
        """Pending jobs no worker has claimed yet, by submission time (the maximum pending
        age, HUB_MAX_PENDING_SECONDS, fails those left too long)."""
        return f"{self.prefix}jobs:unclaimed"

    @property
    def fleet(self) -> str:
        """The job policy the hubs publish (publish_policy.lua) and every script follows, so
        the hub's settings apply whichever worker finishes a job."""
        return f"{self.prefix}fleet"

    @property
    def fair_usage(self) -> str:
        """Each customer's decayed GPU-seconds (fair share), charged when a lease ends."""
        return f"{self.prefix}fair:usage"

    @property
    def held(self) -> str:
        """Jobs a bounded scheduling policy (affinity, fit) passed over, by their deadline:
        the claim takes one first once its deadline passed (shared/scheduling/chooser.py)."""
        return f"{self.prefix}sched:held"

    @property
    def fair_weights(self) -> str:
        """Each customer's fair-share weight, published by the hubs from the tiers."""
        return f"{self.prefix}fair:weights"

    def leases(self, worker_id: str) -> str:
        return f"{self.prefix}jobs:active:{worker_id}"

    def finished(self, status: str) -> str:
        """Registry of finished jobs: completed, failed (the dead letter) or cancelled."""
        return f"{self.prefix}jobs:{status}"

    def status_index(self, status: str) -> str:
        """The index of the jobs in `status`: pending, active, or a finished registry."""
        if status == "pending":
            return self.pending
        if status == "active":
            return self.active
        return self.finished(status)

    def job_class(self, class_id: str) -> str:
        return f"{self.prefix}class:{class_id}"

    @property
    def classes(self) -> str:
        return f"{self.prefix}classes"

    def service_classes(self, service: str, customer: str | None = None) -> str:
        base = f"{self.prefix}classes:{service}"
        return base if customer is None else f"{base}:{customer}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}worker:{worker_id}"

    def notify(self, service: str) -> str:
        return f"{self.prefix}notify:{service}"

    def idle_workers(self, service: str) -> str:
        """The workers whose last claim found nothing, offering `service`, scored by their
        size (shared/scheduling/fit.py): the `fit` policy leaves a job to a smaller one."""
        return f"{self.prefix}idle:{service}"

    def wake(self, worker_id: str) -> str:
        """One worker's own doorbell: it blocks on it beside its services' `notify` lists,
        so a script can wake that worker rather than any idle one."""
        return f"{self.prefix}wake:{worker_id}"

    def warm_idle(self, service: str, model: str) -> str:
        """The idle workers offering `service` that have `model` warm and claim with the
        `affinity` policy, scored by size: a job that prefers `model` and becomes claimable
        rings one of these workers' own doorbells instead of the service's."""
        return f"{self.prefix}warm:{service}:{model}"

    def verdicts(self, caps_digest: str) -> str:
        """The matcher's verdicts for one capability document (its JSON's SHA-1), per class
        id: a claim scan reads them instead of decoding the classes that document cannot
        run. Class ids are digests of their documents and the key of the capability JSON,
        so a verdict never goes stale; the key expires when no claim adds to it. Named under
        `classes*` (no service index can be named so: theirs is `classes:`), which the direct
        workers' ACL (release/README.md) grants already."""
        return f"{self.prefix}classes.verdicts:{caps_digest}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def stats(self, minute: int) -> str:
        return f"{self.prefix}stats:{minute}"

    def control(self, worker_id: str) -> str:
        return f"{self.prefix}control:{worker_id}"

    def rate_limit(self, bucket: str) -> str:
        """A client token's request bucket (`bucket`: the token's sha256, never the token)."""
        return f"{self.prefix}ratelimit:{bucket}"

    def webhook(self, delivery_id: str) -> str:
        return f"{self.prefix}webhook:{delivery_id}"

    @property
    def webhooks_due(self) -> str:
        return f"{self.prefix}webhooks:due"

    @property
    def webhooks_failed(self) -> str:
        return f"{self.prefix}webhooks:failed"

    @property
    def gateway_grants(self) -> str:
        return f"{self.prefix}gateway:grants"

    @property
    def gateway_workers(self) -> str:
        return f"{self.prefix}gateway:workers"

    @property
    def gateway_revoked(self) -> str:
        return f"{self.prefix}gateway:revoked"


def hash_tag(prefix: str) -> str | None:
    """The Redis Cluster hash tag every key under `prefix` shares, or None when keys under it
    may land in different slots. Redis hashes only what is between a key's first `{` and
    the first `}` after it, when that is not empty; so the prefix must hold both braces."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if end > start + 1 else None
