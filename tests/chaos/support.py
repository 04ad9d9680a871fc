"""Chaos-test machinery: a restartable Redis with AOF, hub and worker processes that a test
kills, freezes and restarts, a pausable TCP proxy, and the job accounting every scenario
ends with.

Everything listens on 127.0.0.1 only. Every process runs in a session of its own, logs to a
file (a pipe nobody reads would fill up and block it), and is killed when the test ends,
whatever happened (a frozen one is thawed first).

Accounting. `lost` counts accepted jobs that at the end are neither finished (completed,
failed, cancelled) nor legitimately waiting (pending in the queue, or active under a lease
of a live worker). `completed_twice` counts jobs with more than one `completed` event in
the `events` stream; `outcome_twice` (asserted too, not on the line) counts jobs with more
than one terminal event of any kind, e.g. `cancelled` and then `completed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.broker import Broker
from shared.embedded_redis import EmbeddedRedis
from shared.keys import Keys
from shared.pools import pool_of
from shared.redis_clock import redis_now_ms
from shared.redis_types import RedisClient
from shared.text import as_text
from tests.helpers import wait_until
from tests.ports import free_port
from tests.redis_servers import Cluster, SentinelSet, Server
from tests.tcp_proxy import PausableProxy

ROOT = Path(__file__).resolve().parent.parent.parent

CLIENT_TOKEN = "chaos-client-token"
OPERATOR_TOKEN = "chaos-operator-token"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

# Fast timings shared by hubs and workers (they must agree on the lease).
LEASE_TIMEOUT = 2.0
HEARTBEAT_INTERVAL = 0.3
REAPER_INTERVAL = 0.2
FAST: dict[str, str] = {
    "LEASE_TIMEOUT_SECONDS": f"{LEASE_TIMEOUT:g}",
    "HEARTBEAT_INTERVAL_SECONDS": f"{HEARTBEAT_INTERVAL:g}",
    "REAPER_INTERVAL_SECONDS": f"{REAPER_INTERVAL:g}",
    "IDLE_POLL_SECONDS": "1",
    "RETRY_BACKOFF_SECONDS": "0.05",
    "RETRY_BACKOFF_MAX_SECONDS": "0.2",
    "RETRY_AVOID_SECONDS": "0",
}

# How long after a silent drop (no reset, no close) a hub or worker must be working again.
# What it waits for is timers, not work: an idle poll (1 s here) plus the silent-link margin
# of a blocking wait (5 s, worker/runtime.py), then a command that hangs until its socket
# timeout (REDIS_COMMAND_TIMEOUT_SECONDS, 10 s by default; the black-hole scenarios set
# BLACKHOLE_COMMAND_TIMEOUT): about 16 s with the default, measured 10-16 s. The bound only has
# to tell "noticed and recovered" from "stuck until restarted", so it leaves 24 s over the
# timers, far more than scheduling adds to them on a loaded 2-core box.
SILENT_DROP_BOUND = 40.0
# REDIS_COMMAND_TIMEOUT_SECONDS in the black-hole scenarios: what they test is that the drop
# is noticed and repaired at all; the default's 10 s would only make them longer.
BLACKHOLE_COMMAND_TIMEOUT = "3"

WORKER_ENV: dict[str, str] = {
    "SERVICES": "simulation",
    "WORKER_DASHBOARD_ENABLED": "false",
    "WORKER_PROGRESS_INTERVAL_SECONDS": "0.1",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
    "LOG_LEVEL": "info",
}
HUB_ENV: dict[str, str] = {
    "HUB_HOST": "127.0.0.1",
    "HUB_AUTH_TOKEN": CLIENT_TOKEN,
    "HUB_OPERATOR_TOKEN": OPERATOR_TOKEN,
    "HUB_ACCESS_LOG": "false",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "info",
}
TERMINAL = frozenset({"completed", "failed", "cancelled"})
_OURS = ("HUB_", "WS_", "WORKER_", "REDIS", "LOG_", "CUSTOMER_", "SERVICES", "SIMULATION_")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any emp-redis setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env["PYTHONPATH"] = str(ROOT)
    env["WORKER_ENV_FILE"] = "/nonexistent/.env.worker"  # never a developer's file
    env.update(extra)
    return env


def now_ms() -> int:
    return int(time.time() * 1000)


# -- Redis ------------------------------------------------------------------------------


class ChaosRedis:
    """A Redis server with AOF on a fixed port, so clients reconnect to the same address
    after a restart. `appendfsync always` (the default here) fsyncs every write before it
    is acknowledged, so even `kill -9` loses no acknowledged submission; `everysec` may lose
    up to about one second of them."""

    def __init__(self, data_dir: Path, *, appendfsync: str = "always") -> None:
        self.appendfsync = appendfsync
        self.server = EmbeddedRedis(
            data_dir, port=free_port(), appendonly=True, appendfsync=appendfsync
        )
        self.restarts = 0

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> str:
        return self.server.start(timeout=20)

    def kill(self) -> float:
        """`kill -9` the server; returns when (time.time()) it was killed."""
        pid = self.server.pid
        killed = time.time()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self.server.stop()  # reaps the process
        return killed

    def restart(self, *, hard: bool = True) -> float:
        """Kill (hard) or stop (SIGTERM) the server and start it again on the same port and
        data directory; returns how long it was unreachable, in seconds."""
        down = self.kill() if hard else time.time()
        if not hard:
            self.server.stop()
        self.start()
        self.restarts += 1
        return time.time() - down

    def stop(self) -> None:
        self.server.stop()


# -- processes --------------------------------------------------------------------------


@dataclass
class Proc:
    """One hub or worker process; its output goes to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None  # hubs: the HTTP port
    frozen: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} serves no port"
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> float:
        """`kill -9`; returns when (time.time()) the signal was sent, once the process is gone."""
        killed = time.time()
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.frozen = False
        return killed

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait: a worker drains, a hub stops cleanly."""
        if self.alive:
            self.thaw()
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def freeze(self) -> float:
        """SIGSTOP: the process keeps its sockets open but runs nothing at all."""
        self.popen.send_signal(signal.SIGSTOP)
        self.frozen = True
        return time.time()

    def thaw(self) -> float:
        if self.frozen:
            self.popen.send_signal(signal.SIGCONT)
            self.frozen = False
        return time.time()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines_about(self, job_id: str) -> list[str]:
        marker = f"job_id={job_id}"
        return [line for line in self.log().splitlines() if marker in line]


class Fleet:
    """Starts hub and worker processes and guarantees none outlives the test. `redis_env`:
    more Redis settings for every process (REDIS_SENTINELS, ...), with or without a URL."""

    def __init__(
        self, root: Path, redis_url: str, redis_env: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.redis_url = redis_url
        self.redis_env = dict(redis_env or {})
        self.procs: list[Proc] = []
        self._starts: Counter[str] = Counter()
        (root / "logs").mkdir(parents=True, exist_ok=True)

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self._starts[name] += 1
        log_path = self.root / "logs" / f"{name}.{self._starts[name]}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def hub(self, name: str = "hub", *, port: int | None = None, **env: str) -> Proc:
        """Start `python -m hub` on `port` (a free one by default; pass the old port to
        restart a hub at the same address); WS_PORT equals HUB_PORT, so one server serves
        REST, SSE and /ws."""
        port = port or free_port()
        values = {**HUB_ENV, **FAST, "REDIS_URL": self.redis_url, **self.redis_env, **env}
        values.update(HUB_PORT=str(port), WS_PORT=str(port))
        args = ["-m", "hub", "--env-file", "/nonexistent/.env.hub"]
        proc = self._spawn(name, args, clean_env(**values))
        proc.port = port
        return proc

    def worker(self, worker_id: str, *, redis_url: str | None = None, **env: str) -> Proc:
        """Start `python -m worker` with the simulation connector."""
        values = {
            **WORKER_ENV,
            **FAST,
            "HUB_REDIS_URL": redis_url or self.redis_url,
            **self.redis_env,
            "WORKER_ID": worker_id,
            **env,
        }
        return self._spawn(worker_id, ["-m", "worker"], clean_env(**values))

    def gateway_worker(self, worker_id: str, hub_urls: list[str], token: str, **env: str) -> Proc:
        """Start `python -m worker` as a gateway worker: hub URLs and a token, no Redis URL."""
        values = {
            **WORKER_ENV,
            **FAST,
            "WORKER_GATEWAY_URL": ",".join(hub_urls),
            "WORKER_GATEWAY_TOKEN": token,
            **env,
        }
        return self._spawn(worker_id, ["-m", "worker"], clean_env(**values))

    def by_name(self, name: str) -> list[Proc]:
        return [p for p in self.procs if p.name == name]

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)

    def tails(self, lines: int = 30) -> str:
        out = []
        for proc in self.procs:
            text = proc.log().splitlines()[-lines:]
            out.append(f"----- {proc.log_path.name} (pid {proc.pid}) -----")
            out.extend(text)
        return "\n".join(out)


async def hub_ready(proc: Proc, timeout: float = 30) -> None:
    """Wait until the hub answers /ready (Redis reachable, event reader running)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=proc.url, timeout=2) as http:
        while True:
            if not proc.alive:
                raise AssertionError(f"{proc.name} exited:\n{proc.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/ready")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{proc.name} not ready in {timeout:g} s:\n{proc.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)


# -- events and accounting --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobEvent:
    id: str
    type: str
    seq: int
    data: dict[str, Any]

    @property
    def ts_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

    @property
    def worker_id(self) -> str | None:
        worker = self.data.get("worker_id")
        return worker if isinstance(worker, str) else None


async def read_events(redis: RedisClient, keys: Keys) -> dict[str, list[JobEvent]]:
    """Every job event in the `events` stream, grouped by job, in stream order."""
    out: dict[str, list[JobEvent]] = defaultdict(list)
    start = "-"
    while True:
        page = await redis.xrange(keys.events, min=start, max="+", count=10_000)
        if not page:
            return out
        for entry_id, raw in page:
            assert raw is not None, entry_id  # XRANGE entries always carry their fields
            f = {as_text(k): as_text(v) for k, v in raw.items()}
            if f.get("kind") != "job":
                continue
            try:
                data = orjson.loads(f.get("data") or "{}")
            except orjson.JSONDecodeError:
                data = {}
            out[f["job"]].append(
                JobEvent(as_text(entry_id), f.get("type", ""), int(f.get("seq") or 0), data or {})
            )
        start = "(" + as_text(page[-1][0])


def stream_order(events: Mapping[str, list[JobEvent]], etype: str) -> list[tuple[str, JobEvent]]:
    """(job id, event) for every event of `etype`, in stream order."""
    found = [(job_id, e) for job_id, evs in events.items() for e in evs if e.type == etype]
    return sorted(found, key=lambda pair: tuple(int(x) for x in pair[1].id.split("-")))


@dataclass
class Accounting:
    scenario: str
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0  # legitimately pending or running at the end
    lost: int = 0
    completed_twice: int = 0
    outcome_twice: int = 0
    lost_ids: list[str] = field(default_factory=list)
    twice_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"ACCOUNTING {self.scenario}: submitted={self.submitted} "
            f"completed={self.completed} failed={self.failed} cancelled={self.cancelled} "
            f"lost={self.lost} completed_twice={self.completed_twice}"
        )

    def add(self, other: Accounting) -> None:
        """Count `other`'s jobs too (another pool's, say)."""
        self.submitted += other.submitted
        self.completed += other.completed
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.waiting += other.waiting
        self.lost += other.lost
        self.completed_twice += other.completed_twice
        self.outcome_twice += other.outcome_twice
        self.lost_ids += other.lost_ids
        self.twice_ids += other.twice_ids

    def check(self, *, all_finished: bool = True) -> None:
        assert self.lost == 0, f"lost jobs: {self.lost_ids[:10]}"
        assert self.completed_twice == 0, f"completed twice: {self.twice_ids[:10]}"
        assert self.outcome_twice == 0, f"more than one outcome: {self.twice_ids[:10]}"
        if all_finished:
            assert self.waiting == 0, f"{self.waiting} job(s) still waiting at the end"


async def account(
    redis: RedisClient,
    keys: Keys,
    scenario: str,
    job_ids: Collection[str],
    events: Mapping[str, list[JobEvent]] | None = None,
) -> Accounting:
    """Classify every accepted job of one pool (`keys`) from Redis itself (job hashes,
    leases, event stream)."""
    if events is None:
        events = await read_events(redis, keys)
    acc = Accounting(scenario, submitted=len(job_ids))
    ids = list(job_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), ["status", "worker_id"])
            pipe.zscore(keys.pending, job_id)
        replies = await pipe.execute()
    live = {
        as_text(w)
        # Heartbeats are stamped by the clock of the pool's primary (one of several on a
        # cluster): ask that one.
        for w in await redis.zrangebyscore(
            keys.workers, await redis_now_ms(redis, keys.workers), "+inf"
        )
    }
    for i, job_id in enumerate(ids):
        status_raw, worker_raw = replies[2 * i]
        in_queue = replies[2 * i + 1] is not None
        status = as_text(status_raw) if status_raw is not None else None
        worker = as_text(worker_raw) if worker_raw is not None else ""
        if status == "completed":
            acc.completed += 1
        elif status == "failed":
            acc.failed += 1
        elif status == "cancelled":
            acc.cancelled += 1
        elif (status == "pending" and in_queue) or (
            status == "active"
            and worker in live
            and await redis.hexists(keys.leases(worker), job_id)
        ):
            acc.waiting += 1
        else:
            acc.lost += 1
            acc.lost_ids.append(job_id)
        types = [e.type for e in events.get(job_id, [])]
        if types.count("completed") > 1:
            acc.completed_twice += 1
        if sum(types.count(t) for t in TERMINAL) > 1:
            acc.outcome_twice += 1
            acc.twice_ids.append(job_id)
    return acc


async def unfinished(redis: RedisClient, keys: Keys, job_ids: Iterable[str]) -> list[str]:
    ids = list(job_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.job(job_id), "status")
        statuses = await pipe.execute()
    return [
        j for j, s in zip(ids, statuses, strict=True) if s is None or as_text(s) not in TERMINAL
    ]


def report(acc: Accounting, **measured: object) -> None:
    """Print the accounting line and the measurements (and append them to the file named
    by EMP_CHAOS_REPORT, if set), for `python -m scripts.reliability`."""
    lines = [acc.line()]
    if measured:
        pairs = " ".join(f"{k}={_fmt(v)}" for k, v in measured.items())
        lines.append(f"MEASURED {acc.scenario}: {pairs}")
    for line in lines:
        print(line, flush=True)
    target = os.environ.get("EMP_CHAOS_REPORT", "").strip()
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write("".join(f"{line}\n" for line in lines))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace(" ", "_")


# -- the fixture's object ---------------------------------------------------------------


@dataclass
class ChaosBase:
    """What every chaos fixture gives a scenario: a direct client and broker on its Redis
    (to observe, never to drive the scenario) and the process fleet, torn down after the
    test. `scenario` is the test's name without `test_`, used in the ACCOUNTING and
    MEASURED lines. `broker` is the pool the fleet serves; a scenario over several pools
    (`pools`) counts, waits and reads events per pool through the methods below, which
    find each job's pool from its id."""

    scenario: str
    root: Path
    redis: RedisClient
    broker: Broker
    fleet: Fleet
    started: float = field(default_factory=time.monotonic)

    @property
    def keys(self) -> Keys:
        return self.broker.keys

    @property
    def pools(self) -> dict[str, Broker]:
        """Every pool the fleet serves, by name: `broker`'s alone unless a fixture says more."""
        return {self.broker.pool: self.broker}

    def keys_of(self, job_id: str) -> Keys:
        """The keys of the pool that holds `job_id` (a job id names its pool)."""
        return self.pools[pool_of(job_id)].keys

    def by_pool(self, job_ids: Iterable[str]) -> dict[str, list[str]]:
        """`job_ids` grouped by pool, in order; every pool has an entry."""
        groups: dict[str, list[str]] = {pool: [] for pool in self.pools}
        for job_id in job_ids:
            groups[pool_of(job_id)].append(job_id)
        return groups

    async def events(self) -> dict[str, list[JobEvent]]:
        """Every pool's job events, grouped by job (ids name their pool: no two collide)."""
        out: dict[str, list[JobEvent]] = {}
        for broker in self.pools.values():
            out.update(await read_events(self.redis, broker.keys))
        return out

    async def unfinished(self, job_ids: Iterable[str]) -> list[str]:
        left: list[str] = []
        for pool, ids in self.by_pool(job_ids).items():
            left += await unfinished(self.redis, self.pools[pool].keys, ids)
        return left

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def start_hub(self, name: str = "hub", **kwargs: Any) -> Proc:
        proc = self.fleet.hub(name, **kwargs)
        await hub_ready(proc)
        return proc

    def start_worker(self, worker_id: str, **env: str) -> Proc:
        return self.fleet.worker(worker_id, **env)

    async def registered(self, *worker_ids: str, timeout: float = 30) -> None:
        async def check() -> bool:
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in worker_ids:
                    pipe.zscore(self.keys.workers, worker_id)
                return all(score is not None for score in await pipe.execute())

        await wait_until(check, timeout=timeout, interval=0.05, message=f"{worker_ids} register")

    async def account(
        self, job_ids: Collection[str], events: Mapping[str, list[JobEvent]] | None = None
    ) -> Accounting:
        """`account`, pool by pool, summed."""
        if events is None:
            events = await self.events()
        total = Accounting(self.scenario)
        for pool, ids in self.by_pool(job_ids).items():
            keys = self.pools[pool].keys
            total.add(await account(self.redis, keys, self.scenario, ids, events))
        return total

    def report(self, acc: Accounting, **measured: object) -> None:
        report(acc, duration_s=self.elapsed, **measured)


@dataclass(kw_only=True)
class Chaos(ChaosBase):
    """The `chaos` fixture: one Redis server (restartable) and the proxies in front of it."""

    server: ChaosRedis
    proxies: list[PausableProxy] = field(default_factory=list)

    async def proxy(self) -> PausableProxy:
        proxy = await PausableProxy(self.server.port).start()
        self.proxies.append(proxy)
        return proxy


@dataclass(kw_only=True)
class SentinelChaos(ChaosBase):
    """The `sentinel_chaos` fixture: hubs and workers reach Redis through the session's
    Sentinel set (one primary, two replicas, three sentinels), whose primary the scenario
    kills; `redis` and `broker` follow the primary too."""

    servers: SentinelSet


@dataclass(kw_only=True)
class ClusterChaos(ChaosBase):
    """The `cluster_chaos` fixture: a private Redis Cluster (three primaries, one replica
    each) whose nodes the scenario kills and restarts, and pools (`POOLS` of every process
    unless a process is given its own) that `Cluster.pools_on_distinct_primaries` put on three different
    primaries. `redis` is a cluster client; `brokers` observe each pool; `broker` is the
    first pool's."""

    servers: Cluster
    brokers: dict[str, Broker]

    @property
    def pools(self) -> dict[str, Broker]:
        return self.brokers

    def primary_of(self, pool: str) -> Server:
        """The primary that serves `pool` now (the one slot of its hash tag)."""
        return self.servers.owner_of_pool(pool)
