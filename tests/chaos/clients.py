"""The scenarios' side of the hub's APIs: job bodies, submission (in batches, or one at a
time with retries across hubs), following events over SSE and an operator WebSocket, and
waiting, in Redis itself, for every job to finish."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import websockets

from shared.pools import DEFAULT_POOL, pooled_id
from shared.text import as_text
from tests.chaos.support import CLIENT, OPERATOR_TOKEN, ChaosBase
from tests.helpers import wait_until


def sim_job(job_id: str, *, steps: int, step_ms: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "service_type": "simulation",
        "payload": {"steps": steps, "step_ms": step_ms, "result": job_id},
        **extra,
    }


async def submit_batch(http: httpx.AsyncClient, jobs: list[dict[str, Any]]) -> list[str]:
    """POST /jobs/batch in chunks of at most 1000; every job must be created."""
    ids: list[str] = []
    for start in range(0, len(jobs), 1000):
        response = await http.post("/jobs/batch", json={"jobs": jobs[start : start + 1000]})
        assert response.status_code == 201, response.text
        created = response.json()["jobs"]
        assert all(j["created"] for j in created), created
        ids += [j["id"] for j in created]
    return ids


async def wait_all_finished(chaos: ChaosBase, ids: list[str], timeout: float) -> None:
    async def done() -> bool:
        return not await chaos.unfinished(ids)

    try:
        await wait_until(done, timeout=timeout, interval=0.1, message="every job finishes")
    except AssertionError:
        left = await chaos.unfinished(ids)
        states = await job_states(chaos, left[:5])
        raise AssertionError(f"{len(left)} job(s) unfinished, e.g. {states}") from None


async def job_states(chaos: ChaosBase, ids: list[str]) -> dict[str, dict[str, str]]:
    """What Redis holds of each job (a failure message says why it is unfinished)."""
    found: dict[str, dict[str, str]] = {}
    for job_id in ids:
        fields = await chaos.redis.hgetall(chaos.keys_of(job_id).job(job_id))
        found[job_id] = {
            as_text(k): as_text(v)[:80]
            for k, v in fields.items()
            if as_text(k) in ("status", "worker_id", "attempts", "token", "error", "updated_at")
        }
    return found


class Submitter:
    """Submits jobs one at a time (client-chosen ids) through any of several hubs, retrying
    each until a hub acknowledges it: 201 created, or 200 when an earlier attempt that got
    no answer had in fact been written. A transport error moves on to the next hub; a 503
    (Redis unreachable) retries after a short backoff. A job that names a `pool` is
    recorded under the id the hub gives it there, `pool!id` (shared/pools.py)."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [
            httpx.AsyncClient(base_url=url, headers=CLIENT, timeout=httpx.Timeout(10, connect=2))
            for url in urls
        ]
        self.acked: list[str] = []
        self.replayed: list[str] = []  # acknowledged by a 200 on retry
        self.served: Counter[int] = Counter()  # hub index -> acknowledgements
        self.acked_by: dict[str, int] = {}  # job id -> the hub that acknowledged it
        self.sent_at: dict[str, float] = {}  # job id -> when the acknowledged request left
        self.acked_at: dict[str, float] = {}  # job id -> when its acknowledgement arrived
        self.failures: Counter[str] = Counter()
        self.flowing = asyncio.Event()  # run() lanes start no new submission while clear
        self.flowing.set()

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()

    async def submit(self, job: dict[str, Any], hub: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        job_id = pooled_id(str(job.get("pool") or DEFAULT_POOL), str(job["id"]))
        attempt = 0
        while True:
            index = (hub + attempt) % len(self.clients)
            attempt += 1
            sent = time.time()
            try:
                response = await self.clients[index].post("/jobs", json=job)
            except httpx.TransportError as exc:
                self.failures[type(exc).__name__] += 1
                response = None
            if response is not None and response.status_code in (200, 201):
                assert response.json()["id"] == job_id
                self.acked.append(job_id)
                if response.status_code == 200:
                    self.replayed.append(job_id)
                self.served[index] += 1
                self.acked_by[job_id] = index
                self.sent_at[job_id] = sent
                self.acked_at[job_id] = time.time()
                return
            if response is not None:
                assert response.status_code == 503, response.text
                self.failures["503"] += 1
            assert time.monotonic() < deadline, f"{job_id} never acknowledged"
            await asyncio.sleep(0.05)  # retry pacing while a hub or Redis is down

    async def run(
        self, jobs: list[dict[str, Any]], concurrency: int, hubs: int | None = None
    ) -> None:
        queue = list(reversed(jobs))
        count = hubs or len(self.clients)

        async def lane(n: int) -> None:
            i = n
            while queue:
                await self.flowing.wait()
                if not queue:
                    return
                await self.submit(queue.pop(), hub=i % count)
                i += 1

        await asyncio.gather(*(lane(n) for n in range(concurrency)))


async def sse_events(base_url: str, job_id: str, timeout: float = 30) -> list[str]:
    """Follow GET /jobs/{id}/events until the stream ends; the event names received."""
    return [name for name, _ in await sse_stream(base_url, job_id, timeout)]


async def sse_stream(base_url: str, job_id: str, timeout: float = 30) -> list[tuple[str, Any]]:
    """Follow GET /jobs/{id}/events until the stream ends; the events received, as (name,
    decoded data) pairs."""
    events: list[tuple[str, Any]] = []
    name = ""
    async with (
        httpx.AsyncClient(base_url=base_url, headers=CLIENT, timeout=timeout) as http,
        http.stream("GET", f"/jobs/{job_id}/events") as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, orjson.loads(line.removeprefix("data: "))))
    return events


@contextlib.asynccontextmanager
async def operator_events(hub_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """An operator WebSocket subscribed to every job's events; yields the list its messages
    are appended to as they arrive, so a scenario can wait on what it has seen so far."""
    received: list[dict[str, Any]] = []
    url = hub_url.replace("http://", "ws://") + f"/ws?token={OPERATOR_TOKEN}"
    async with websockets.connect(url, open_timeout=5) as ws:
        assert orjson.loads(await ws.recv())["type"] == "welcome"
        await ws.send(orjson.dumps({"type": "subscribe", "all": True}).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        reader = asyncio.create_task(_collect(ws, received))
        try:
            yield received
        finally:
            reader.cancel()


async def _collect(ws: Any, into: list[dict[str, Any]]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in ws:
            into.append(orjson.loads(message))


def completed_seen(messages: list[dict[str, Any]]) -> set[str]:
    """Job ids with a `completed` event among WebSocket messages."""
    return {
        m["event"]["job_id"]
        for m in messages
        if m.get("type") == "event" and m["event"]["event"] == "completed"
    }
