"""Gateway tokens and what they entitle a worker to: the trust boundary for untrusted GPU boxes.

A worker on a box the operator does not control (a rented marketplace GPU, a partner's data
centre) gets no Redis credentials: those would let it read every tenant's jobs. It gets a
gateway token instead, bound to one worker id and a `Grant`, and talks only to a hub, which
runs the broker's scripts on its behalf (hub/gateway.py).

A grant caps what the worker may declare, because matching trusts declarations:
- `services`: the only services it may offer;
- `isolation` and `customers`: the customer isolation it is registered with. Only a grant
  can make a worker dedicated (`strict`) to a list of customers; a worker that declares
  strict isolation without such a grant is registered as `none`, so it never receives jobs
  that require dedicated hardware;
- `regions` and `compliance`: the regions and compliance tags it may claim to have (none by
  default: a compliance tag is an attestation the operator makes, not the box);
- `max_concurrency`: how many leases it may hold at once.

Tokens are stored as SHA-256 digests: `gateway:grants` maps a digest to its grant, and
`gateway:workers` maps a worker id to its current digest, so issuing a new token for a
worker replaces the old one. Revoking publishes the worker id on `gateway:revoked`, which
every hub listens to and answers by closing that worker's connections.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated

import msgspec

from shared.broker_replies import text
from shared.capabilities import Capabilities, CustomerAccess, GeographicCapabilities
from shared.errors import InvalidInput
from shared.keys import Keys
from shared.redis_types import RedisClient
from shared.requirements import Isolation
from shared.validation import (
    CustomerList,
    NameList,
    ServiceType,
    WorkerId,
    convert,
    normalise_services,
)

TOKEN_PREFIX = "egw"
MAX_CONCURRENCY = 1024


class Grant(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    worker_id: WorkerId
    services: Annotated[list[ServiceType], msgspec.Meta(min_length=1, max_length=64)]
    isolation: Isolation = "none"
    customers: CustomerList = []
    regions: NameList | None = None  # None: whatever region the worker reports
    compliance: NameList = []
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONCURRENCY)] = 1
    note: Annotated[str, msgspec.Meta(max_length=200)] = ""
    issued_at: int = 0  # epoch ms, set when the token is issued

    def __post_init__(self) -> None:
        services = normalise_services(self.services)
        if services != self.services:  # case-insensitive (shared/validation.py)
            msgspec.structs.force_setattr(self, "services", services)
        if self.isolation == "strict" and not self.customers:
            raise InvalidInput("customers", "strict isolation needs the customers it serves")
        if self.isolation != "strict" and self.customers:
            raise InvalidInput("customers", "only a strict (dedicated) grant lists customers")

    def cap(self, declared: Capabilities) -> Capabilities:
        """What the worker is registered with: its declaration, narrowed to this grant."""
        access = declared.customer_access
        if self.isolation == "strict":
            allowed = self.customers
            if access.isolation == "strict":  # a worker may narrow its grant, never widen it
                allowed = [c for c in access.allowed_customers if c in self.customers]
            access = CustomerAccess(isolation="strict", allowed_customers=allowed)
        elif self.isolation == "loose" or access.isolation != "none":
            access = CustomerAccess(isolation="loose", denied_customers=access.denied_customers)
        geo = declared.geographic
        region = geo.region
        if self.regions is not None and region not in self.regions:
            region = None
        compliance = [tag for tag in geo.compliance if tag in self.compliance]
        return msgspec.structs.replace(
            declared,
            services=[s for s in declared.services if s in self.services],
            customer_access=access,
            geographic=GeographicCapabilities(region=region, compliance=compliance),
        )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(worker_id: str) -> str:
    """`egw.<worker id>.<secret>`: the worker reads its id from the token; the hub trusts
    only the digest of the whole token."""
    return f"{TOKEN_PREFIX}.{worker_id}.{secrets.token_urlsafe(32)}"


def worker_id_of(token: str) -> str | None:
    """The worker id a token names, or None for a string that is not a gateway token."""
    prefix, _, rest = token.partition(".")
    worker_id, _, secret = rest.rpartition(".")
    if prefix != TOKEN_PREFIX or not worker_id or not secret:
        return None
    return worker_id


class GrantStore:
    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def issue(self, grant: Grant) -> tuple[str, Grant]:
        """A new token for `grant.worker_id`, replacing (and revoking) any earlier one."""
        token = new_token(grant.worker_id)
        grant = msgspec.structs.replace(grant, issued_at=int(time.time() * 1000))
        digest = token_digest(token)
        old = await self._redis.hget(self._keys.gateway_workers, grant.worker_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            if old is not None:
                pipe.hdel(self._keys.gateway_grants, text(old) or "")
            pipe.hset(self._keys.gateway_grants, digest, msgspec.json.encode(grant))
            pipe.hset(self._keys.gateway_workers, grant.worker_id, digest)
            await pipe.execute()
        if old is not None:
            await self._announce_revoked(grant.worker_id)
        return token, grant

    async def revoke(self, worker_id: str) -> bool:
        digest = await self._redis.hget(self._keys.gateway_workers, worker_id)
        if digest is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.gateway_grants, text(digest) or "")
            pipe.hdel(self._keys.gateway_workers, worker_id)
            await pipe.execute()
        await self._announce_revoked(worker_id)
        return True

    async def _announce_revoked(self, worker_id: str) -> None:
        """Tell every hub's gateway relay to close `worker_id`'s connections. Sent once the
        revocation is stored, not inside its transaction: redis-py's Redis Cluster client
        refuses PUBLISH in one, and a relay needs the notice only after the change."""
        await self._redis.publish(self._keys.gateway_revoked, worker_id)

    async def lookup(self, token: str) -> Grant | None:
        """The grant behind a presented token, None when it is unknown or revoked."""
        if worker_id_of(token) is None or len(token) > 256:
            return None
        return await self.by_digest(token_digest(token))

    async def by_digest(self, digest: str) -> Grant | None:
        raw = await self._redis.hget(self._keys.gateway_grants, digest)
        return msgspec.json.decode(raw, type=Grant) if raw is not None else None

    async def grants(self) -> list[Grant]:
        raw = await self._redis.hvals(self._keys.gateway_grants)
        found = [msgspec.json.decode(value, type=Grant) for value in raw]
        return sorted(found, key=lambda grant: grant.worker_id)


def grant_from_json(value: object) -> Grant:
    """A grant from an operator's request body (the hub sets `issued_at`)."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "issued_at"}
    return convert(value, Grant)
