"""Real Redis deployments for the tests, on 127.0.0.1 only, from the binary the tests already
use (shared.embedded_redis finds it): a primary with two replicas watched by three sentinels,
a primary with one replica (no Sentinel), a TLS server with a CA and certificates made at
test time (trustme), a "managed" server with the commands managed services forbid
disabled, and a Redis Cluster (`start_cluster`: primaries, replicas, and helpers to find a
slot's primary, kill it, have its replica take over, and move a slot), also over TLS.

Each is started once per test session by a fixture in tests/conftest.py (they cost seconds,
not milliseconds). Tests that break one (kill its primary, freeze its replica) leave it as
they found it: the same number of nodes, replicating.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from redis import Redis as SyncRedis
from redis.crc import key_slot

from shared.embedded_redis.binary import require_server_binary
from shared.embedded_redis.readiness import ReadyOutcome, wait_ready
from shared.redis_settings import RedisSettings
from tests.ports import free_port

MASTER_NAME = "emp"
# How long a primary is silent before the sentinels call it down. Not shorter: on a loaded
# 2-core CI box a live primary has gone a second without answering (a fork for a replica's
# full sync, all cores busy), the sentinels failed it over while it kept taking writes, and
# writes that its one remaining replica had acknowledged (WAIT) were lost when that replica
# resynced from the new primary: the split brain docs/HIGH-AVAILABILITY.md describes.
DOWN_AFTER_MS = 3000
# A sentinel that led or voted in a failover starts no other for twice this long: short, so
# a test can fail over several times in a row (kills FAILOVER_GAP apart).
FAILOVER_TIMEOUT_MS = 3000
FAILOVER_GAP = 2 * FAILOVER_TIMEOUT_MS / 1000 + 0.5


class ServerError(Exception):
    """A server did not start; the message carries the tail of its log."""


class Server:
    """One redis-server process (a data node, or a sentinel with `sentinel_config`)."""

    def __init__(
        self, root: Path, name: str, args: Sequence[str] = (), *, sentinel_config: str = ""
    ) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.args = list(args)
        self.sentinel_config = sentinel_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra: Sequence[str] = (), timeout: float = 20) -> None:
        binary = str(require_server_binary())
        argv = [binary]
        if self.sentinel_config:
            config = self.dir / "sentinel.conf"  # sentinels rewrite it: one per process
            config.write_text(self.sentinel_config)
            argv += [str(config), "--sentinel"]
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--logfile", str(self.log_path), "--daemonize", "no"]
        if not self.sentinel_config:
            # No persistence; a replica syncs at once (the default waits 5 s for others).
            argv += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
        argv += [*self.args, *extra]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        if wait_ready(self.proc, "127.0.0.1", self.port, None, deadline) is not ReadyOutcome.READY:
            self.stop()
            raise ServerError(f"{self.name} did not start ({argv}):\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to replicas or clients, as a crashed host."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self) -> SyncRedis:
        return SyncRedis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return dict(client.info(section))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _wait(condition: object, what: str, timeout: float) -> None:
    """Poll a synchronous condition (these servers are driven from synchronous fixtures)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            if condition():
                return
        except Exception as exc:  # a server still starting or failing over
            last = exc
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(0.05)


def replicas_online(primary: Server, count: int) -> bool:
    """`count` replicas attached to `primary` and in sync."""
    info = primary.info("replication")
    online = [
        value
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    ]
    return info.get("role") == "master" and len(online) >= count


@dataclass
class Replicated:
    """A primary and its replicas, without Sentinel."""

    primary: Server
    replicas: list[Server]

    def settings(self) -> RedisSettings:
        return RedisSettings(url=self.primary.url)

    def wait_in_sync(self, timeout: float = 20) -> None:
        _wait(
            lambda: replicas_online(self.primary, len(self.replicas)),
            f"{len(self.replicas)} replica(s) of {self.primary.name} online",
            timeout,
        )

    def stop(self) -> None:
        for server in [*self.replicas, self.primary]:
            server.stop()


def start_replicated(root: Path, replicas: int) -> Replicated:
    primary = Server(root, "primary")
    primary.start()
    followers = [Server(root, f"replica-{n}") for n in range(1, replicas + 1)]
    group = Replicated(primary, followers)
    try:
        for replica in followers:
            replica.start(["--replicaof", "127.0.0.1", str(primary.port)])
        group.wait_in_sync()
    except BaseException:
        group.stop()
        raise
    return group


@dataclass
class SentinelSet:
    """Data nodes (one primary, the rest replicas) watched by sentinels. `failover()` kills
    the primary and brings it back as a replica of the new one."""

    nodes: list[Server]
    sentinels: list[Server]
    failovers: int = 0
    history: list[str] = field(default_factory=list)  # primaries' names, in order

    def settings(self, url: str | None = None) -> RedisSettings:
        return RedisSettings(
            url=url,
            sentinels=tuple(("127.0.0.1", s.port) for s in self.sentinels),
            sentinel_master=MASTER_NAME,
        )

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for hub and worker processes."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    def named_primary_port(self, sentinel: Server) -> int | None:
        with sentinel.client() as client:
            addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return None if not addr else int(addr[1])

    def primary(self) -> Server:
        ports = {self.named_primary_port(s) for s in self.sentinels if s.alive}
        if len(ports) != 1:
            raise ServerError(f"the sentinels disagree on the primary: {ports}")
        port = ports.pop()
        return next(node for node in self.nodes if node.port == port)

    def replicas(self) -> list[Server]:
        primary = self.primary()
        return [node for node in self.nodes if node is not primary]

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every sentinel knows the same primary, all replicas and the other sentinels, and
        every replica is in sync: ready for a failover."""
        replicas = len(self.nodes) - 1

        def healthy() -> bool:
            primary = self.primary()
            if not replicas_online(primary, replicas):
                return False
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
                    known = client.sentinel_slaves(MASTER_NAME)
                if state["num-other-sentinels"] < len(self.sentinels) - 1:
                    return False
                if state["num-slaves"] < replicas or state["is_sdown"] or state["is_odown"]:
                    return False
                if any(r["is_sdown"] or r["is_disconnected"] for r in known):
                    return False
            return True

        _wait(healthy, "a healthy Sentinel set", timeout)

    def kill_primary(self) -> tuple[Server, float]:
        """SIGKILL the current primary; returns it and when (time.time()) it died."""
        primary = self.primary()
        killed = time.time()
        primary.kill()
        self.failovers += 1
        return primary, killed

    def wait_new_primary(self, old: Server, timeout: float = 30) -> Server:
        """Until every live sentinel names another node, and that node says it is primary."""

        def promoted() -> bool:
            new = self.primary()
            return new is not old and new.info("replication").get("role") == "master"

        _wait(promoted, f"a primary other than {old.name}", timeout)
        new = self.primary()
        self.history.append(new.name)
        return new

    def rejoin(self, old: Server, timeout: float = 30) -> None:
        """Start a killed node again, as a replica of the current primary (empty: it syncs),
        and wait until it is in sync and every sentinel counts it as a healthy replica. (Not
        waiting for the sentinels is harsher than an operator's set between failovers: a
        kill then may find them knowing only a replica that lags.)"""
        primary = self.primary()
        old.start(["--replicaof", "127.0.0.1", str(primary.port)])
        self.wait_healthy(timeout)

    def restore(self) -> None:
        """Every node running again (killed ones as replicas) and the set healthy."""
        for node in self.nodes:
            if not node.alive:
                self.rejoin(node)
        self.wait_healthy()

    def failover(self) -> Server:
        old, _ = self.kill_primary()
        new = self.wait_new_primary(old)
        self.rejoin(old)
        return new

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.stop()


def start_sentinel_set(root: Path, *, replicas: int = 2, sentinels: int = 3) -> SentinelSet:
    group = start_replicated(root, replicas)
    config = "\n".join(
        [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {group.primary.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} {replicas}",
            "",
        ]
    )
    watchers = [
        Server(root, f"sentinel-{n}", sentinel_config=config) for n in range(1, sentinels + 1)
    ]
    found = SentinelSet([group.primary, *group.replicas], watchers)
    try:
        for sentinel in watchers:
            sentinel.start()
        found.wait_healthy()
    except BaseException:
        found.stop()
        raise
    return found


@dataclass
class TlsServer:
    """A Redis that speaks only TLS on `tls_port` and wants a client certificate. Its
    certificate names `localhost` only, so connecting to 127.0.0.1 fails the host name
    check unless it is turned off. `server` also listens in plain text on its own port, for
    the fixtures (readiness, FLUSHALL)."""

    server: Server
    tls_port: int
    ca_file: Path
    cert_file: Path  # the client's certificate and key, in one PEM
    key_file: Path

    def settings(self, host: str = "localhost", *, client_cert: bool = True) -> RedisSettings:
        return RedisSettings(
            url=f"rediss://{host}:{self.tls_port}/0",
            tls_ca_file=self.ca_file,
            tls_cert_file=self.cert_file if client_cert else None,
            tls_key_file=self.key_file if client_cert else None,
        )

    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": f"rediss://localhost:{self.tls_port}/0",
            "REDIS_TLS_CA_FILE": str(self.ca_file),
            "REDIS_TLS_CERT_FILE": str(self.cert_file),
            "REDIS_TLS_KEY_FILE": str(self.key_file),
        }


@dataclass
class TlsSentinel:
    """One sentinel, reached over TLS, watching the TLS server over TLS (quorum 1): for
    Sentinel with `rediss://`. The sentinel names the primary by IP, which the server's
    certificate (localhost only) does not list, so clients turn the host name check off."""

    sentinel: Server
    tls_port: int
    tls: TlsServer

    def settings(self) -> RedisSettings:
        return RedisSettings(
            url="rediss://localhost/0",
            tls_ca_file=self.tls.ca_file,
            tls_cert_file=self.tls.cert_file,
            tls_key_file=self.tls.key_file,
            tls_verify_hostname=False,
            sentinels=(("127.0.0.1", self.tls_port),),
            sentinel_master=MASTER_NAME,
        )

    def env(self) -> dict[str, str]:
        return {
            **self.tls.env(),
            "REDIS_URL": "rediss://localhost/0",
            "REDIS_TLS_VERIFY_HOSTNAME": "false",
            "REDIS_SENTINELS": f"127.0.0.1:{self.tls_port}",
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }


def start_tls_sentinel(root: Path, tls: TlsServer) -> TlsSentinel:
    tls_port = free_port()
    certs = tls.ca_file.parent
    config = "\n".join(
        [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {tls.tls_port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"tls-port {tls_port}",
            f"tls-cert-file {certs / 'server.crt'}",
            f"tls-key-file {certs / 'server.key'}",
            f"tls-ca-cert-file {tls.ca_file}",
            "tls-replication yes",  # reach the monitored server over TLS too
            "tls-auth-clients yes",
            "",
        ]
    )
    sentinel = Server(root, "tls-sentinel", sentinel_config=config)
    sentinel.start()
    found = TlsSentinel(sentinel, tls_port, tls)

    def watching() -> bool:
        with sentinel.client() as client:
            state = client.sentinel_master(MASTER_NAME)
        return not state["is_sdown"] and "s_down" not in str(state.get("flags", ""))

    try:
        _wait(watching, "the TLS sentinel to see its primary", 20)
    except BaseException:
        sentinel.stop()
        raise
    return found


class NoTls(Exception):
    """The redis-server binary was built without TLS."""


def start_tls_server(root: Path) -> TlsServer:
    certs = root / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("emp-worker")
    ca_file = certs / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    paths = {}
    for name, leaf in (("server", server_cert), ("client", client_cert)):
        cert, key = certs / f"{name}.crt", certs / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        paths[name] = (cert, key)
    tls_port = free_port()
    server = Server(
        root,
        "tls",
        [
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(paths["server"][0]),
            "--tls-key-file", str(paths["server"][1]),
            "--tls-ca-cert-file", str(ca_file),
            "--tls-auth-clients", "yes",
        ],
    )  # fmt: skip
    try:
        server.start()
    except ServerError as exc:
        # A build without TLS refuses the tls-* directives: its log says so, naming them.
        if "tls" in server.log_tail().lower():
            raise NoTls(
                f"{require_server_binary()} has no TLS support (built without BUILD_TLS=yes)"
            ) from exc
        raise
    return TlsServer(server, tls_port, ca_file, *paths["client"])


# What managed services (ElastiCache, Memorystore, Azure Cache, ...) refuse: the broker's
# normal paths must never need them.
FORBIDDEN_COMMANDS = ("CONFIG", "DEBUG", "KEYS", "SCAN", "MONITOR", "MODULE")


def start_managed_like(root: Path) -> Server:
    """A server where FORBIDDEN_COMMANDS do not exist (`rename-command X ""`)."""
    args: list[str] = []
    for command in FORBIDDEN_COMMANDS:
        args += ["--rename-command", command, ""]
    server = Server(root, "managed", args)
    server.start()
    return server


# -- Redis Cluster ---------------------------------------------------------------------------

# How long a node is silent before the others call it failing. Not shorter, for the reason
# DOWN_AFTER_MS gives: a busy 2-core box must not fail over a live primary. Tests that want
# a takeover do not wait this long: `Cluster.wait_takeover` tells the replica to take over
# (the cluster_failover chaos scenario waits, to see the failover a crash really causes).
CLUSTER_NODE_TIMEOUT_MS = 3000
SLOTS = 16384
# Every key of slot ARGV[1] to ARGV[2]:ARGV[3] (timeout ARGV[4] ms), in one script: nothing
# else runs on the node meanwhile. MIGRATE takes at most ~8000 keys per call (Lua's stack).
MOVE_KEYS = """
local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', ARGV[1], 100000000)
for i = 1, #keys, 1000 do
  local last = math.min(i + 999, #keys)
  redis.call('MIGRATE', ARGV[2], ARGV[3], '', 0, ARGV[4], 'KEYS', unpack(keys, i, last))
end
return #keys
"""


@dataclass
class Cluster:
    """A Redis Cluster of `primaries` (as started; a takeover makes a replica a primary) and
    their replicas, each a redis-server with `cluster-enabled yes`. Node identities live in
    each node's `nodes.conf`, so a killed node started again rejoins as itself (as a replica
    of whoever took over its slots)."""

    nodes: list[Server]
    bus_ports: dict[str, int]  # server name -> its cluster bus port
    ids: dict[str, str] = field(default_factory=dict)  # server name -> cluster node id

    # -- what a client needs ----------------------------------------------------------

    def seed(self) -> Server:
        """A live node: the one URL a client is given (it discovers the others)."""
        return next(node for node in self.nodes if node.alive)

    def settings(self) -> RedisSettings:
        return RedisSettings(url=self.seed().url, cluster=True)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.seed().url, "REDIS_CLUSTER": "true"}

    # -- the topology, as the nodes see it -------------------------------------------

    def node(self, node_id: str) -> Server:
        name = next(name for name, known in self.ids.items() if known == node_id)
        return next(server for server in self.nodes if server.name == name)

    def _shards(self, asked: Server) -> dict[int, str]:
        """slot -> primary node id, from `asked`'s CLUSTER SLOTS. (Subcommands are sent as two
        words throughout: redis-py then returns the reply as Redis sent it, unparsed.)"""
        with asked.client() as client:
            rows = client.execute_command("CLUSTER", "SLOTS")
        owners: dict[int, str] = {}
        for row in rows:
            start, end, primary = int(row[0]), int(row[1]), row[2]
            owner = primary[2].decode() if isinstance(primary[2], bytes) else str(primary[2])
            for slot in range(start, end + 1):
                owners[slot] = owner
        return owners

    def owner(self, slot: int) -> Server:
        """The primary serving `slot`, as every live node agrees (ServerError otherwise)."""
        seen = {self._shards(node).get(slot) for node in self.nodes if node.alive}
        if len(seen) != 1 or None in seen:
            raise ServerError(f"the nodes disagree on who serves slot {slot}: {seen}")
        return self.node(str(seen.pop()))

    def owner_of(self, key: str) -> Server:
        return self.owner(key_slot(key.encode()))

    def owner_of_pool(self, pool: str) -> Server:
        """The primary serving every key of `pool`: the slot of its hash tag (shared/pools.py)."""
        return self.owner_of(f"{{{pool}}}")

    def pools_on_distinct_primaries(self, count: int) -> dict[str, Server]:
        """The first `count` of the pool names p1, p2, ... whose slots belong to `count`
        different primaries, in that order, each with its primary."""
        found: dict[str, Server] = {}
        for n in range(1, 1000):
            pool, owner = f"p{n}", self.owner_of_pool(f"p{n}")
            if all(owner is not taken for taken in found.values()):
                found[pool] = owner
            if len(found) == count:
                return found
        raise ServerError(f"no {count} pools on {count} different primaries")

    def subscribers(self, channel: str) -> int:
        """Subscribers of `channel` on every live node: each node knows only its own."""
        total = 0
        for node in self.nodes:
            if node.alive:
                with node.client() as client:
                    total += int(client.execute_command("PUBSUB", "NUMSUB", channel)[1])
        return total

    def primaries(self) -> list[Server]:
        return [node for node in self.nodes if node.alive and self.role(node) == "master"]

    def role(self, node: Server) -> str:
        return str(node.info("replication")["role"])

    def replica_of(self, primary: Server) -> Server:
        primary_id = self.ids[primary.name]
        for node in self.nodes:
            if not node.alive or node is primary:
                continue
            with node.client() as client:
                myself = _myself(client.execute_command("CLUSTER", "NODES"))
            if myself.get("master") == primary_id:
                return node
        raise ServerError(f"{primary.name} has no live replica")

    def _roles(self, asked: Server) -> dict[str, str]:
        """node id -> "master", or the id of the primary it replicates, for every node
        `asked` knows (CLUSTER NODES: id, address, flags, primary id, ...)."""
        with asked.client() as client:
            raw = client.execute_command("CLUSTER", "NODES")
        roles: dict[str, str] = {}
        for line in (raw.decode() if isinstance(raw, bytes) else str(raw)).splitlines():
            node_id, _, flags, primary, *_ = line.split()
            if "handshake" not in flags.split(","):
                roles[node_id] = "master" if primary == "-" else primary
        return roles

    def wait_ok(self, timeout: float = 30) -> None:
        """Every live node says cluster_state:ok; all of them map every slot to the same
        primaries, see every live node up and agree on who replicates whom (a replica that
        others still take for a primary is refused their votes in a takeover); and every
        replica's link to its primary is up."""

        def settled() -> bool:
            live = [node for node in self.nodes if node.alive]
            live_ids = {self.ids[node.name] for node in live}
            maps, views = [], []
            for node in live:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
                maps.append(self._shards(node))
                views.append(self._roles(node))
            if any(len(m) != SLOTS or m != maps[0] for m in maps):
                return False
            # Only the live nodes' roles: a dead one is remembered as whatever it was.
            views = [{n: role for n, role in v.items() if n in live_ids} for v in views]
            if any(set(v) != live_ids or v != views[0] for v in views):
                return False
            for node in live:
                replication = node.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            return True

        _wait(settled, "the cluster to agree on its slots and be ok", timeout)

    # -- breaking it -----------------------------------------------------------------

    def kill_primary(self, primary: Server) -> None:
        """SIGKILL a primary, as a crashed host."""
        primary.kill()

    def wait_takeover(
        self, old: Server, replica: Server, timeout: float = 30, *, force: bool = True
    ) -> Server:
        """Until `replica` serves `old`'s slots and every live node agrees. It is told to
        take over (CLUSTER FAILOVER FORCE: an election among the live primaries, no wait for
        the node timeout), which is what a crashed primary leads to anyway, seconds later;
        `force=False` waits for that instead: the others call `old` failing after
        CLUSTER_NODE_TIMEOUT_MS, and its replica is elected on its own, as in production."""
        if force:
            with replica.client() as client:
                client.execute_command("CLUSTER FAILOVER FORCE")
        _wait(lambda: self.role(replica) == "master", f"{replica.name} to be promoted", timeout)
        self.wait_ok(timeout)
        return replica

    def restore(self, timeout: float = 30) -> None:
        """Every node running again (a killed primary comes back as a replica of the node
        that took its slots) and the cluster settled."""
        for node in self.nodes:
            if not node.alive:
                node.start()
        self.wait_ok(timeout)

    def move_slot(self, slot: int, to: Server, timeout: float = 30) -> None:
        """Hand `slot` and every key in it to the primary `to`, as `redis-cli --cluster
        reshard` does, but with every key moved at once, in the same transaction as the
        MIGRATING mark (MOVE_KEYS).

        Redis moves a slot key by key, and a Lua script that touches keys it did not declare
        (ours derive every name from the prefix) fails half-way, after its first writes,
        when it meets a key already moved ("non local key"), or works on half the state
        when redirected to the importing node. Moved in one step, no script ever sees the
        slot half-moved: before the transaction every key is on the old primary; after it
        every key is on the new one, and scripts are redirected there whole (ASK, then
        MOVED once the slot is handed over)."""
        source = self.owner(slot)
        if source is to:
            return
        source_id, target_id = self.ids[source.name], self.ids[to.name]
        with to.client() as target, source.client() as origin:
            target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            pipe = origin.pipeline(transaction=True)
            pipe.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            pipe.eval(MOVE_KEYS, 0, slot, "127.0.0.1", to.port, 10_000)
            pipe.execute()
            if origin.execute_command("CLUSTER COUNTKEYSINSLOT", slot):
                raise ServerError(f"slot {slot}: keys left on {source.name} after the move")
            target.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            origin.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node.alive and node not in (source, to) and self.role(node) == "master":
                with node.client() as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        _wait(
            lambda: self.owner(slot) is to, f"every node to see slot {slot} on {to.name}", timeout
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _myself(nodes: bytes | str) -> dict[str, str]:
    """The `myself` line of CLUSTER NODES: id and, for a replica, its primary's id."""
    text = nodes.decode() if isinstance(nodes, bytes) else nodes
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 3 and "myself" in parts[2].split(","):
            return {"id": parts[0], "master": parts[3]}
    raise ServerError(f"no 'myself' in CLUSTER NODES:\n{text}")


def start_cluster(
    root: Path,
    primaries: int = 3,
    replicas_per_primary: int = 0,
    *,
    tls: Callable[[], list[str]] | None = None,
) -> Cluster:
    """`primaries` primaries sharing the 16384 slots evenly, each with
    `replicas_per_primary` replicas; returns once the cluster is ok. Built by hand (ADDSLOTS,
    MEET, REPLICATE) rather than with `redis-cli --cluster create`, which needs redis-cli
    besides the server binary and waits in whole seconds. `tls()` gives each node the
    arguments of a TLS port of its own (the plain port stays, for the helpers here)."""
    nodes: list[Server] = []
    bus_ports: dict[str, int] = {}
    for n in range(primaries * (1 + replicas_per_primary)):
        role = f"primary-{n}" if n < primaries else f"replica-{n - primaries}"
        server = Server(root, f"cluster-{role}")
        bus_ports[server.name] = free_port()
        server.args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
            # The bus port defaults to port + 10000, which may be taken or past 65535.
            "--cluster-port", str(bus_ports[server.name]),
            # A replica may always take over, however long it was cut off (tests kill).
            "--cluster-replica-validity-factor", "0",
            "--cluster-allow-replica-migration", "no",
        ]  # fmt: skip
        if tls is not None:
            server.args += tls()
        nodes.append(server)
    cluster = Cluster(nodes, bus_ports)
    try:
        for server in nodes:
            server.start()
        for epoch, server in enumerate(nodes, 1):
            with server.client() as client:
                cluster.ids[server.name] = str(client.execute_command("CLUSTER", "MYID").decode())
                # Distinct epochs from the start: no collision to resolve before "ok".
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for n, server in enumerate(nodes[:primaries]):
            first, last = n * SLOTS // primaries, (n + 1) * SLOTS // primaries - 1
            with server.client() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        with nodes[0].client() as client:
            for server in nodes[1:]:
                client.execute_command(
                    "CLUSTER MEET", "127.0.0.1", server.port, bus_ports[server.name]
                )

        def everyone_met() -> bool:
            for server in nodes:
                with server.client() as client:
                    known = client.execute_command("CLUSTER", "NODES").decode().splitlines()
                if len(known) < len(nodes) or any("handshake" in line for line in known):
                    return False
            return True

        _wait(everyone_met, "every node to know every other", 30)
        for n, replica in enumerate(nodes[primaries:]):
            primary = nodes[n % primaries]
            with replica.client() as client:
                client.execute_command("CLUSTER REPLICATE", cluster.ids[primary.name])
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class TlsCluster:
    """A Redis Cluster whose nodes also listen on TLS ports, with TLS between them (bus and
    replication), certificates from `tls` (the TLS server's CA). The certificate names
    localhost, but the nodes announce 127.0.0.1: clients turn the host name check off, as
    with the TLS sentinel."""

    cluster: Cluster
    tls_ports: dict[str, int]  # server name -> its TLS port
    tls: TlsServer

    def settings(self) -> RedisSettings:
        seed = self.cluster.seed()
        return RedisSettings(
            url=f"rediss://localhost:{self.tls_ports[seed.name]}/0",
            cluster=True,
            tls_ca_file=self.tls.ca_file,
            tls_cert_file=self.tls.cert_file,
            tls_key_file=self.tls.key_file,
            tls_verify_hostname=False,
        )

    def stop(self) -> None:
        self.cluster.stop()


def start_tls_cluster(
    root: Path, tls: TlsServer, primaries: int = 3, replicas_per_primary: int = 1
) -> TlsCluster:
    certs = tls.ca_file.parent
    ports: list[int] = []

    def tls_args() -> list[str]:
        ports.append(free_port())
        return [
            "--tls-port", str(ports[-1]),
            "--tls-cert-file", str(certs / "server.crt"),
            "--tls-key-file", str(certs / "server.key"),
            "--tls-ca-cert-file", str(tls.ca_file),
            "--tls-auth-clients", "yes",
            "--tls-cluster", "yes",
            "--tls-replication", "yes",
        ]  # fmt: skip

    cluster = start_cluster(root, primaries, replicas_per_primary, tls=tls_args)
    by_name = {node.name: port for node, port in zip(cluster.nodes, ports, strict=True)}
    return TlsCluster(cluster, by_name, tls)
