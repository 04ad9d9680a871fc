"""The worker: register, heartbeat, pull matching jobs into free slots, stop gracefully.

Pull loop: while a slot is free, claim; when nothing is claimable, block on the broker's
wake-up list (no polling) for at most `idle_poll` seconds, or until the next retry is due.
The broker is reached through a link (worker/links.py): Redis itself for a trusted worker,
a hub's gateway for an untrusted one; nothing here depends on which.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from redis.exceptions import AuthenticationError, NoPermissionError

from shared import __version__
from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import Capabilities
from shared.config import ConfigError
from shared.outage import REDIS_OUTAGE
from shared.redis_client import TRANSIENT_ERRORS
from worker.capabilities import build_capabilities, merge_warm_models
from worker.connectors.base import Connector, Health
from worker.hardware.info import HardwareInfo
from worker.hardware.report import to_report
from worker.hardware.utilization import sample_utilization, with_free_memory
from worker.heartbeat import HeartbeatThread
from worker.job_runner import HeldJob, JobRunner, Outcome
from worker.links import WorkerLink, open_link
from worker.settings import WorkerSettings

logger = logging.getLogger(__name__)
HISTORY = 100
BACKGROUND_STOP_SECONDS = 5.0  # the control listener and health loop, once cancelled
# Seconds past a blocking call's own timeout after which its connection counts as dead.
SILENT_LINK_MARGIN = 5.0
# Seconds between claims while the broker is unreachable: doubling, so a long outage costs
# Redis (and the log) little, capped so a worker is back at work soon after it ends.
CLAIM_BACKOFF = 0.25
CLAIM_BACKOFF_MAX = 2.0


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        connectors: Mapping[str, Connector],
        hardware: HardwareInfo,
        *,
        burst: bool = False,
        link: WorkerLink | None = None,
    ) -> None:
        self.settings = settings
        self.connectors = dict(connectors)
        # The connectors that can know warm models: the base class's answer is always none,
        # and asking every connector after every job is work a no-op job would notice.
        self._warm_sources = [
            c for c in self.connectors.values() if type(c).warm_models is not Connector.warm_models
        ]
        self.hardware = hardware
        self.burst = burst
        self.id = settings.worker_id
        self.started = time.time()
        self.running: dict[str, HeldJob] = {}
        self.history: collections.deque[Outcome] = collections.deque(maxlen=HISTORY)
        self.health: dict[str, Health] = {}
        self.state = "active"  # operator state: active | paused | draining
        self.status = "starting"
        self.dashboard_url: str | None = None
        self.link: WorkerLink = link or open_link(settings)
        self.broker = self.link.broker
        self._waiter = self.link.waiter
        REDIS_OUTAGE.subject = self.link.describe()  # "Redis" or "the hub gateway (...)"
        self._runner = JobRunner(
            self.broker,
            self.id,
            progress_interval=settings.progress_interval,
            next_claim_caps=self._next_claim_caps,
        )
        self._slots = asyncio.Semaphore(settings.concurrent_jobs)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        # The wait for work in progress, cancelled by stop(): one task per wait, and the
        # claim loop resumes on its result directly (the wake-up is on a job's round trip).
        self._waiting: asyncio.Task[int | Claim | None] | None = None
        # The answer of the last call that completed a job and found nothing to claim next,
        # with the capabilities it claimed with: the claim loop's next claim would only
        # repeat it (one more round trip on Redis just as the next submission arrives), so
        # it waits for work at once instead. Anything claimable since rings a doorbell or is
        # handed to this worker, which the wait sees.
        self._answered: tuple[NoClaim, bytes] | None = None
        self._caps = build_capabilities(settings, hardware, [])
        self._caps_bytes = Broker.encode_capabilities(self._caps)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat = HeartbeatThread(
            self.link.for_heartbeat,
            self.id,
            settings.broker,
            self._revoked_from_thread,
            self._running_tokens,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `stop()` (or, in burst mode, until nothing is left to claim)."""
        self._loop = asyncio.get_running_loop()
        for connector in self.connectors.values():
            await connector.start()
        await self._check_health()
        try:
            await self._register()
        except ConfigError:
            await self._close_clients()
            raise
        self.status = "idle"
        self._heartbeat.start()
        self._publish()
        background = [
            asyncio.create_task(self.link.run_control(self.revoke), name="control"),
            asyncio.create_task(self._health_loop(), name="health"),
        ]
        try:
            await self._claim_loop()
        finally:
            await self._shutdown(background)

    def stop(self) -> None:
        """Stop claiming and begin the graceful shutdown (safe to call from a signal)."""
        if not self._stopping.is_set():
            logger.info(
                "stopping: no new claims; running jobs get %gs", self.settings.shutdown_grace
            )
            self._stopping.set()
            # Ends a wait for a slot (_acquire_slot): the claim loop finds the worker
            # stopping and gives the permit back. The one extra permit is never used, since
            # nothing claims once stopping.
            self._slots.release()
            if self._waiting is not None:
                self._waiting.cancel()

    async def _register(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self.state = await self.broker.register_worker(self.id, self._caps, self._info())
                REDIS_OUTAGE.recovered()
                logger.info(
                    "worker %s registered: services %s, %d GPU(s), state %s, pools %s",
                    self.id,
                    ",".join(self._caps.services) or "(none healthy)",
                    len(self._caps.hardware.gpus),
                    self.state,
                    ",".join(self.settings.broker.pools),
                )
                return
            except (AuthenticationError, NoPermissionError) as exc:
                # Not transient: wrong password or an ACL without the commands the scripts use.
                raise ConfigError("HUB_REDIS_URL", f"Redis refused this worker: {exc}") from None
            except TRANSIENT_ERRORS as exc:
                REDIS_OUTAGE.failed("register", exc)
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)

    def _info(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "worker_type": self.settings.worker_type,
            "concurrent_jobs": self.settings.concurrent_jobs,
            "connectors": sorted(self.connectors),
            # Every pool lists the worker: this says which others it serves too.
            "pools": list(self.settings.broker.pools),
            "dashboard_url": self.dashboard_url,
            "started_at": int(self.started * 1000),
            # The gateway registers this worker with its own lease timeout (hub/gateway.py).
            "lease_timeout_seconds": self.settings.broker.lease_timeout,
            "hardware": to_report(self.hardware),
        }

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        self.status = "stopping"
        self._publish()
        self._heartbeat.beat_now()
        if self.running:
            logger.info(
                "waiting up to %gs for %d running job(s)",
                self.settings.shutdown_grace,
                len(self.running),
            )
            await self._wait_for_jobs(self.settings.shutdown_grace)
        for held in list(self.running.values()):
            held.cancel_reason = "shutdown"
            held.cancel.set()
            await self.connectors[held.job.service_type].interrupt(held.job.id)
        await self._wait_for_jobs(10.0)
        for task in background:
            task.cancel()
        # Bounded: a background task stuck in its teardown (redis-py's pub/sub close can
        # hang on Python 3.11) must not keep the heartbeat thread beating, and the worker
        # registered, after it was told to stop.
        _, stuck = await asyncio.wait(background, timeout=BACKGROUND_STOP_SECONDS)
        if stuck:
            logger.warning(
                "%s did not stop within %gs; going on without it",
                ", ".join(sorted(task.get_name() for task in stuck)),
                BACKGROUND_STOP_SECONDS,
            )
        # The heartbeat thread stops first: a beat landing after the deregistration would
        # register the worker again (status 'stopping', live until its lease runs out).
        await asyncio.to_thread(self._heartbeat.stop)
        try:
            released = await self.broker.deregister_worker(self.id)
            if released:
                logger.info("released %d job(s) still held", released)
        except TRANSIENT_ERRORS as exc:
            logger.warning("could not deregister (%s); leases expire by themselves", exc)
        await self._close_clients()
        logger.info("worker %s stopped", self.id)

    async def _close_clients(self) -> None:
        for connector in self.connectors.values():
            await connector.close()
        await self.link.aclose()

    async def _wait_for_jobs(self, timeout: float) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # -- claiming -----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        hops = 0
        backoff = CLAIM_BACKOFF
        while not self._stopping.is_set():
            if not await self._acquire_slot():
                break
            answered, self._answered = self._answered, None
            if answered is not None and hops == 0 and answered[1] is self._caps_bytes:
                self._slots.release()
                hops = await self._idle_wait(answered[0].next_due_ms)
                continue
            try:
                result = await self.broker.claim(self.id, self._caps_bytes, hops=hops)
            except TRANSIENT_ERRORS as exc:
                self._slots.release()
                REDIS_OUTAGE.failed("claim", exc)
                await self._sleep(backoff)
                backoff = min(backoff * 2, CLAIM_BACKOFF_MAX)
                continue
            REDIS_OUTAGE.recovered()
            hops, backoff = 0, CLAIM_BACKOFF
            if isinstance(result, Claim):
                self._start(result)
                continue
            self._slots.release()
            if result.reason in ("paused", "draining"):
                if self.state != result.reason:
                    logger.info("operator state %s: not claiming", result.reason)
                self.state = result.reason
                # Resuming rings the service doorbells, so this wait ends at once then.
                hops = await self._idle_wait(None)
                continue
            self.state = "active"
            if self.burst and result.next_due_ms is None:
                # Burst mode (for tests and batch runs): exit once nothing is claimable, no
                # retry is backing off and nothing runs; a finishing job may unlock more work
                # (customer isolation), so claim again after each one.
                if not self.running:
                    logger.info("burst mode: nothing left to claim, exiting")
                    return
                await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            hops = await self._idle_wait(result.next_due_ms)

    async def _acquire_slot(self) -> bool:
        """Wait for a free slot; False (holding none) when the worker is stopping first.
        A plain wait on the semaphore, which stop() wakes with a permit of its own: racing
        the slot against the stop event instead took two tasks for each wait, and a worker
        with one slot waits once a job."""
        await self._slots.acquire()
        if self._stopping.is_set():
            self._slots.release()
            return False
        return True

    async def _idle_wait(self, next_due_ms: int | None) -> int:
        """Wait for work; the hop count of the wake-up to claim with (0: none). A job
        handed to this worker while it waited (shared/lua/include/handoff.lua) is started
        here, with no claim: it is leased to this worker already."""
        woken = await self._wait_for_work(next_due_ms)
        if isinstance(woken, Claim):
            await self._start_handed(woken)
            return 0
        return woken

    async def _start_handed(self, claim: Claim) -> None:
        """Run a job handed to this idle worker. A slot is free: the worker was idle from
        a claim that found nothing while it held a free slot, and no other job is handed to
        it until a claim of its finds nothing again (handoff.lua's header), so only a
        finishing job's slot may still be on its way back. A worker stopping meanwhile
        leaves it to its deregistration, which puts it back."""
        if await self._acquire_slot():
            self._start(claim)

    async def _wait_for_work(self, next_due_ms: int | None) -> int | Claim:
        timeout = self.settings.broker.idle_poll
        if next_due_ms is not None:
            timeout = max(0.01, min(timeout, next_due_ms / 1000 - time.time()))
        if self._stopping.is_set():
            return 0
        wait = asyncio.create_task(
            self._waiter.wait_for_work(self._caps.services, timeout, worker_id=self.id)
        )
        self._waiting = wait
        # The server answers a BLPOP by its timeout at the latest; past that plus a margin
        # the connection is dead without having said so (NAT, failover, a dropped link).
        silent = asyncio.get_running_loop().call_later(timeout + SILENT_LINK_MARGIN, wait.cancel)
        try:
            # Awaiting the task itself: a cancelled wait (stop(), or the silent-link timer)
            # has unwound, and handed its connection back, by the time this raises.
            woken = await wait
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this worker is being cancelled, not just its wait
            if self._stopping.is_set():
                return 0
            logger.warning("no answer while waiting for work; reconnecting")
            await self.link.reset_waiter()
            return 0
        except Exception as exc:  # any failure of the wait is an outage: wait it out
            REDIS_OUTAGE.failed("wait for work", exc)
            await self._sleep(1.0)
            return 0
        finally:
            silent.cancel()
            self._waiting = None
        # A handed job's token lost to a cancelled wait is not lost: the heartbeat returns a
        # lease it never reports as orphaned, the deregistration any lease.
        return woken or 0

    def _start(self, claim: Claim) -> None:
        held = self._hold(claim)
        task = asyncio.create_task(self._execute(held), name=f"job-{claim.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hold(self, claim: Claim) -> HeldJob:
        held = HeldJob(job=claim.job, token=claim.token)
        self.running[claim.job.id] = held
        self._set_status("busy")
        return held

    async def _execute(self, held: HeldJob) -> None:
        """Run `held`, then each job claimed in the call that completed the one before, on
        this same task: the slot passes straight to the next job, without a task a job."""
        while True:
            follow_up: Claim | None = None
            try:
                connector = self.connectors.get(held.job.service_type)
                if connector is None:  # capabilities only offer configured services
                    await self.broker.fail(
                        self.id, held.job.id, held.token, "service not configured"
                    )
                    return
                outcome = await self._runner.run(held, connector)
                self.history.appendleft(outcome)
                follow_up = outcome.next_claim
                no_claim = outcome.no_claim
                if no_claim is not None and no_claim.reason == "empty" and not self.burst:
                    self._answered = (no_claim, self._caps_bytes)
            finally:
                self.running.pop(held.job.id, None)
                self._refresh_warm_models()
                if follow_up is None or self._stopping.is_set():
                    # A follow-up claimed while stopping is handed back by the deregistration.
                    self._slots.release()
                    self._set_status("busy" if self.running else "idle")
            if follow_up is None or self._stopping.is_set():
                return
            held = self._hold(follow_up)
            task = asyncio.current_task()
            if task is not None:
                task.set_name(f"job-{follow_up.job.id}")

    def _next_claim_caps(self) -> bytes | None:
        """Claim the next job while completing one only while plain claiming would."""
        if self._stopping.is_set() or self.state != "active":
            return None
        # The job just run may have loaded models: the next claim should know them.
        self._refresh_warm_models()
        return self._caps_bytes

    # -- control ------------------------------------------------------------------------

    def revoke(self, job_id: str) -> None:
        """The job is no longer ours (cancelled, timed out or reassigned): interrupt it."""
        held = self.running.get(job_id)
        if held is None or held.cancel.is_set():
            return
        logger.info("interrupting job %s: revoked by the broker", job_id)
        held.cancel_reason = "revoked"
        held.cancel.set()
        task = asyncio.create_task(self.connectors[held.job.service_type].interrupt(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _revoked_from_thread(self, job_ids: list[str]) -> None:
        if self._loop is not None:
            for job_id in job_ids:
                self._loop.call_soon_threadsafe(self.revoke, job_id)

    async def cancel_job(
        self, job_id: str, reason: str = "cancelled from the worker dashboard"
    ) -> bool:
        if job_id not in self.running:
            return False
        await self.broker.cancel(job_id, reason)
        self.revoke(job_id)
        return True

    async def set_state(self, state: str) -> None:
        """Pause, resume or drain through the broker, so hub and worker agree."""
        if state not in ("active", "paused", "draining"):
            raise ValueError(state)
        await self.broker.set_worker_state(self.id, state)  # type: ignore[arg-type]
        self.state = state

    # -- health and capabilities --------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            try:
                await self._check_health()
            except Exception:
                logger.exception("health check failed")

    async def _check_health(self) -> None:
        for name, connector in self.connectors.items():
            try:
                health = await asyncio.wait_for(connector.health(), timeout=10)
            except Exception as exc:  # a probe that raises means unhealthy, not a crash
                health = Health(ok=False, detail=f"{type(exc).__name__}: {exc}")
            previous = self.health.get(name)
            if previous is None or previous.ok != health.ok:
                level = logging.INFO if health.ok else logging.WARNING
                logger.log(
                    level,
                    "connector %s %s %s",
                    name,
                    "healthy" if health.ok else "unhealthy:",
                    health.detail,
                )
            self.health[name] = health
        if self.hardware.gpus:
            # Free VRAM is part of what the hub shows and may match on later: keep it current.
            sample = await asyncio.to_thread(sample_utilization)
            self.hardware = with_free_memory(self.hardware, sample)
        healthy = [name for name, h in self.health.items() if h.ok]
        caps = build_capabilities(
            self.settings,
            self.hardware,
            healthy,
            [c.capabilities() for c in self.connectors.values()],
            self._warm_models(),
        )
        if caps != self._caps:
            self._set_caps(caps)

    def _warm_models(self) -> list[str]:
        return merge_warm_models(c.warm_models() for c in self._warm_sources)

    def _refresh_warm_models(self) -> None:
        """Take the connectors' warm models into the capabilities after a job. Encoded again
        only when they changed, so claims keep sending the same prepared bytes."""
        if not self._warm_sources:
            return
        warm = self._warm_models()
        if warm != self._caps.warm_models:
            self._set_caps(msgspec.structs.replace(self._caps, warm_models=warm))

    def _set_caps(self, caps: Capabilities) -> None:
        self._caps = caps
        self._caps_bytes = Broker.encode_capabilities(caps)
        self._publish(caps_changed=True)

    def _running_tokens(self) -> dict[str, str]:
        """The running jobs' claim tokens, for the heartbeat thread, which calls this. The
        map is copied first, in one C-level call that the main loop cannot interleave with
        (it runs no Python code while holding the GIL); the copy is then read at leisure."""
        return {job_id: held.token for job_id, held in self.running.copy().items()}

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._publish()

    def _publish(self, *, caps_changed: bool = False) -> None:
        """Hand the heartbeat thread the status and capabilities to report next (the
        running jobs it copies itself)."""
        self._heartbeat.update(
            status=self.status if self.status != "starting" else "idle",
            caps=self._caps if caps_changed else None,
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- introspection (dashboard) ------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def heartbeat_age(self) -> float | None:
        last = self._heartbeat.last_ok
        return None if last is None else time.time() - last

    def utilization(self) -> dict[str, Any]:
        return sample_utilization()
