"""The one-command demo (`python3 dev.py run`): a hub with its embedded Redis, three
simulation workers with different capabilities, a handful of demo jobs, and the URLs and
curl commands to look at it all. Ctrl-C stops everything: workers drain first, then the
hub, which stops its Redis.

Every process runs in a session of its own, so Ctrl-C reaches only this script, which then
stops the children in order instead of letting one signal hit them all at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

ROOT = Path(__file__).resolve().parent.parent

WORKERS: dict[str, dict[str, str]] = {
    "demo-rtx4090": {
        "GPU_COUNT": "1",
        "GPU_MEMORY_GB": "24",
        "GPU_MODEL": "NVIDIA GeForce RTX 4090",
        "MODELS": "sdxl",
        "REGION": "us-east",
        "QUALITY_LEVELS": "fast,balanced",
        "COST_PER_HOUR": "0.4",
        "CONCURRENT_JOBS": "2",
    },
    "demo-h100": {
        "GPU_COUNT": "2",
        "GPU_MEMORY_GB": "80",
        "GPU_MODEL": "NVIDIA H100",
        "MODELS": "sdxl,flux-dev",
        "REGION": "eu-west",
        "COMPLIANCE": "gdpr",
        "COST_PER_HOUR": "2.5",
    },
    "demo-acme-dedicated": {
        "GPU_COUNT": "1",
        "GPU_MEMORY_GB": "48",
        "GPU_MODEL": "NVIDIA L40S",
        "MODELS": "sdxl",
        "CUSTOMER_ISOLATION": "strict",
        "ALLOWED_CUSTOMERS": "acme",
    },
}

GPU_80: dict[str, Any] = {"hardware": {"gpu": {"memory_gb": 80}}}
TWO_GPUS_FLUX: dict[str, Any] = {"hardware": {"gpu": {"count": 2}}, "models": ["flux-dev"]}
EU_GDPR: dict[str, Any] = {"geographic": {"region": "eu-west", "compliance": ["gdpr"]}}
CHEAP: dict[str, Any] = {"cost": {"max_per_hour": 1.0}}
DEDICATED: dict[str, Any] = {"customer_isolation": "strict"}
LONG: dict[str, Any] = {"steps": 60, "step_ms": 250}

# (what it shows, priority, requirements, extra body): all runnable by the demo fleet.
JOBS: list[tuple[str, int, dict[str, Any], dict[str, Any]]] = [
    ("long job: watch its progress", 50, {}, {"payload": LONG}),
    ("needs an 80 GB GPU", 90, GPU_80, {}),
    ("needs two GPUs and flux-dev", 70, TWO_GPUS_FLUX, {}),
    ("EU region with GDPR only", 60, EU_GDPR, {}),
    ("cost ceiling 1.0/h", 40, CHEAP, {}),
    ("customer acme, dedicated hardware", 80, DEDICATED, {"customer_id": "acme"}),
    ("low-priority batch", 5, {}, {}),
    ("urgent", 100, {}, {}),
]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Demo:
    workdir: Path
    hub_port: int
    ws_port: int
    redis_port: int
    operator_token: str = field(default_factory=lambda: "op-" + secrets.token_hex(12))
    client_token: str = field(default_factory=lambda: "cl-" + secrets.token_hex(12))
    children: list[Child] = field(default_factory=list)

    @property
    def hub_url(self) -> str:
        return f"http://localhost:{self.hub_port}"

    def spawn(self, name: str, module: str, env: dict[str, str]) -> Child:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full = {
            k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "WORKER_", "REDIS"))
        }
        full.update(env, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=self.workdir,
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def start_hub(self) -> None:
        self.spawn(
            "hub",
            "hub",
            {
                "HUB_HOST": "127.0.0.1",
                "HUB_PORT": str(self.hub_port),
                "WS_PORT": str(self.ws_port),
                "HUB_REDIS_PORT": str(self.redis_port),
                "HUB_DATA_DIR": str(self.workdir / "redis"),
                "HUB_AUTH_TOKEN": self.client_token,
                "HUB_OPERATOR_TOKEN": self.operator_token,
                "LOG_FORMAT": "text",
            },
        )
        wait_for(lambda: self._get("/ready").status_code == 200, "the hub to be ready", 60)

    def start_workers(self) -> None:
        for worker_id, caps in WORKERS.items():
            env = {
                "HUB_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "HUB_OPERATOR_TOKEN": self.operator_token,
                "WORKER_ID": worker_id,
                "SERVICES": "simulation",
                "WORKER_ENV_FILE": "/nonexistent/.env.worker",
                **caps,
            }
            self.spawn(worker_id, "worker", env)
        wait_for(lambda: len(self.workers()) == len(WORKERS), "the workers to register", 60)

    def workers(self) -> list[dict[str, Any]]:
        response = self._get("/workers")
        if response.status_code != 200:
            return []
        listed: list[dict[str, Any]] = response.json()["workers"]
        return [w for w in listed if w["alive"] and w["id"] in WORKERS]

    def submit_jobs(self) -> list[tuple[str, str]]:
        submitted = []
        for what, priority, requirements, extra in JOBS:
            doc = {
                "service_type": "simulation",
                "priority": priority,
                "requirements": requirements,
                "payload": {"steps": 10, "step_ms": 300},
                **extra,
            }
            response = httpx.post(
                f"{self.hub_url}/jobs", json=doc, headers=self._auth(self.client_token), timeout=10
            )
            response.raise_for_status()
            submitted.append((response.json()["id"], what))
        return submitted

    def _get(self, path: str) -> httpx.Response:
        try:
            return httpx.get(
                f"{self.hub_url}{path}", headers=self._auth(self.operator_token), timeout=5
            )
        except httpx.HTTPError:
            return httpx.Response(599)

    @staticmethod
    def _auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def stop(self) -> None:
        """Workers first (they finish or hand back their jobs), then the hub and its Redis."""
        workers = [c for c in self.children if c.name != "hub"]
        hub = [c for c in self.children if c.name == "hub"]
        for group in (workers, hub):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            for child in group:
                try:
                    child.proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()


def wait_for(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise SystemExit("demo: no free port")


def print_guide(demo: Demo, jobs: list[tuple[str, str]], out: TextIO) -> None:
    op, cl, url = demo.operator_token, demo.client_token, demo.hub_url
    lines = [
        "",
        "emp-redis demo is running. Press Ctrl-C to stop everything.",
        "",
        f"  Hub dashboard:   {url}/   (operator token: {op})",
        f"  API docs:        {url}/docs",
        f"  Hub log:         {demo.workdir / 'logs' / 'hub.log'}",
        "  Worker dashboards:",
    ]
    for worker in sorted(demo.workers(), key=lambda w: w["id"]):
        dash = (worker.get("info") or {}).get("dashboard_url") or "(disabled)"
        lines.append(f"    {worker['id']:<22} {dash}")
    lines += ["", "  Demo jobs:"]
    lines += [f"    {job_id}  {what}" for job_id, what in jobs]
    lines += [
        "",
        "  Try it (copy and paste):",
        f"    curl -s -X POST {url}/jobs -H 'Authorization: Bearer {cl}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"service_type": "simulation", "priority": 75, '
        '"payload": {"steps": 20, "step_ms": 250}, '
        '"requirements": {"hardware": {"gpu": {"memory_gb": 40}}}}\'',
        f"    curl -s {url}/jobs/{jobs[0][0]} -H 'Authorization: Bearer {cl}'",
        f"    curl -sN {url}/jobs/{jobs[0][0]}/events -H 'Authorization: Bearer {cl}'",
        f"    curl -s {url}/workers -H 'Authorization: Bearer {op}'",
        f"    curl -s {url}/stats -H 'Authorization: Bearer {op}'",
        "",
        "demo ready",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 dev.py run", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".demo", help="logs and Redis data")
    parser.add_argument("--any-port", action="store_true", help="do not prefer ports 3001/3002")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    demo = Demo(
        workdir=args.workdir.resolve(),
        hub_port=free_port(None if args.any_port else 3001),
        ws_port=free_port(None if args.any_port else 3002),
        redis_port=free_port(),
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print("demo: starting the hub with its embedded Redis ...", flush=True)
        demo.start_hub()
        print("demo: starting 3 simulation workers ...", flush=True)
        demo.start_workers()
        jobs = demo.submit_jobs()
        print_guide(demo, jobs, sys.stdout)
        while not stop.wait(0.5):
            for child in demo.children:
                if child.proc.poll() is not None:
                    print(f"demo: {child.name} exited ({child.proc.returncode}); see {child.log}")
                    stop.set()
    finally:
        print("demo: stopping workers, then the hub and its Redis ...", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            demo.stop()
        print("demo: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
