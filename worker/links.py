"""How a worker reaches the broker: directly over Redis (trusted), or through a hub's gateway.

The runtime, the job runner and the heartbeat thread see one `WorkerBroker`: the broker
calls a worker makes. Two kinds of link provide it:

- `RedisLink` (REDIS_URL / HUB_REDIS_URL, or Sentinel): the worker holds Redis credentials,
  which grant everything in that Redis (see release/README.md, "Trust"). One command client, one
  blocking client for waits and the control channel, as always. A worker serving several
  pools (POOLS) gets a `PooledBroker` (worker/pooled_broker.py), one pool a plain Broker.
- `GatewayLink` (WORKER_GATEWAY_URL + WORKER_GATEWAY_TOKEN): the worker talks only to hubs,
  which run the same scripts on its behalf within its grant (hub/gateway.py). Waits and
  cancel signals travel over the same WebSocket. It serves the default pool only (POOLS
  naming another is refused at startup, worker/settings.py).

Each heartbeat thread opens a link of its own (`for_heartbeat`), so a busy event loop in the
main thread never delays a heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from shared.broker import Broker
from shared.broker_replies import CancelResult, Claim, FailOutcome, Fence, NoClaim, WorkerState
from shared.capabilities import Capabilities
from shared.control_channel import ControlSubscription
from shared.pool_set import PoolSet
from shared.redis_client import connect, drop_connections
from shared.redis_settings import RedisSettings
from shared.settings import BrokerSettings
from worker.control import ControlListener
from worker.gateway_client import GatewayClient
from worker.pooled_broker import PooledBroker
from worker.settings import WorkerSettings


class WorkerBroker(Protocol):
    """The broker calls a worker makes; `shared.broker.Broker` (one pool), `PooledBroker`
    (several pools) and `GatewayClient` provide them."""

    async def register_worker(
        self, worker_id: str, caps: Capabilities, info: Mapping[str, Any] | None = None
    ) -> WorkerState: ...

    async def heartbeat(
        self,
        worker_id: str,
        *,
        status: str = "idle",
        running: Mapping[str, str] | None = None,
        caps: Capabilities | None = None,
    ) -> list[str]: ...

    async def deregister_worker(self, worker_id: str) -> int: ...

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool: ...

    async def claim(
        self, worker_id: str, caps: Capabilities | bytes, *, hops: int = 0
    ) -> Claim | NoClaim: ...

    async def wait_for_work(
        self, services: Sequence[str], timeout: float, *, worker_id: str = ""
    ) -> int | Claim | None: ...

    async def progress(
        self, worker_id: str, job_id: str, token: str, progress: float, message: str = ""
    ) -> Fence: ...

    async def complete(self, worker_id: str, job_id: str, token: str, result: Any) -> Fence: ...

    async def complete_and_claim(
        self, worker_id: str, job_id: str, token: str, result: Any, caps: bytes
    ) -> tuple[Fence, Claim | NoClaim]: ...

    async def fail(
        self, worker_id: str, job_id: str, token: str, error: str, *, retryable: bool = True
    ) -> FailOutcome: ...

    async def release(
        self, worker_id: str, job_id: str, token: str, reason: str = ...
    ) -> Fence: ...

    async def cancel(self, job_id: str, reason: str = "cancelled") -> CancelResult: ...


class WorkerLink(Protocol):
    broker: WorkerBroker  # commands
    waiter: WorkerBroker  # blocking waits for work

    def describe(self) -> str: ...

    async def run_control(self, on_cancel: Callable[[str], None]) -> None:
        """Deliver cancel signals for this worker until cancelled."""

    async def reset_waiter(self) -> None:
        """Drop the waiter's connection: it went silent (NAT, failover)."""

    def for_heartbeat(self) -> WorkerLink:
        """A link of its own for the heartbeat thread (opened lazily in its loop)."""

    async def aclose(self) -> None: ...


class RedisLink:
    def __init__(
        self,
        redis: RedisSettings,
        settings: BrokerSettings,
        worker_id: str,
        *,
        control_keepalive: float = 15.0,
        max_connections: int = 64,
    ) -> None:
        self._connection = redis
        self._settings = settings
        self._worker_id = worker_id
        self._keepalive = control_keepalive
        self._redis = connect(redis, max_connections=max_connections)
        pools = settings.pools
        # Waits for work and the control channel share the client without a read timeout;
        # a wait per pool at once on a Redis Cluster (worker/pooled_broker.py).
        self._blocking = connect(redis, blocking=True, max_connections=3 + len(pools))
        self.broker: WorkerBroker
        self.waiter: WorkerBroker
        self._control: Callable[[str], ControlSubscription]
        if len(pools) == 1:
            # One pool: a plain Broker, each call exactly as it always was, except that its
            # claims accept jobs handed to the worker while it idles (its waits return them;
            # shared/lua/include/handoff.lua). A worker serving several pools, or reached
            # through a gateway, does not: a job handed in one pool would bypass the rank
            # it compares across pools, and the gateway's wait carries hop counts only. With
            # REDIS_WAIT_REPLICAS neither: a claim is run only once replicas acknowledged it,
            # and a handed job arrives before the submission's WAIT has.
            self.broker = Broker(
                self._redis, settings, pool=pools[0], handoff=settings.wait_replicas == 0
            )
            blocking = Broker(self._blocking, settings, pool=pools[0])
            self.waiter, self._control = blocking, blocking.control_subscription
        else:
            pooled = PooledBroker(PoolSet(self._redis, settings), PoolSet(self._blocking, settings))
            # One object: a claim passes on the wake-up of the pool its wait heard.
            self.broker = self.waiter = pooled
            self._control = pooled.control_subscription

    def describe(self) -> str:
        return "Redis"

    async def run_control(self, on_cancel: Callable[[str], None]) -> None:
        listener = ControlListener(
            lambda: self._control(self._worker_id),
            on_cancel,
            keepalive=self._keepalive,
            pong_deadline=min(5.0, self._keepalive),
        )
        await listener.run()

    async def reset_waiter(self) -> None:
        await drop_connections(self._blocking)

    def for_heartbeat(self) -> WorkerLink:
        # A heartbeat goes to every pool at once: a connection each (the client refuses more).
        return RedisLink(
            self._connection,
            self._settings,
            self._worker_id,
            max_connections=1 + len(self._settings.pools),
        )

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._blocking.aclose()


class GatewayLink:
    def __init__(self, hub_urls: Sequence[str], token: str) -> None:
        self._urls = list(hub_urls)
        self._token = token
        self.client = GatewayClient(hub_urls, token)
        self.broker: WorkerBroker = self.client
        self.waiter: WorkerBroker = self.client

    def describe(self) -> str:
        return "the hub gateway (" + ", ".join(self._urls) + ")"

    async def run_control(self, on_cancel: Callable[[str], None]) -> None:
        self.client.on_cancel = on_cancel
        await asyncio.Event().wait()  # pushes arrive on the client's own reader

    async def reset_waiter(self) -> None:
        return None  # a silent wait already dropped its connection (GatewayClient.call)

    def for_heartbeat(self) -> WorkerLink:
        return GatewayLink(self._urls, self._token)

    async def aclose(self) -> None:
        await self.client.aclose()


def open_link(settings: WorkerSettings) -> WorkerLink:
    """The link the settings ask for: the gateway when WORKER_GATEWAY_URL is set, else Redis."""
    if settings.through_gateway:
        return GatewayLink(settings.gateway_urls, settings.gateway_token or "")
    return RedisLink(
        settings.redis,
        settings.broker,
        settings.worker_id,
        control_keepalive=settings.control_keepalive,
    )
