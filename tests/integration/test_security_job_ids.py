"""Client-chosen job ids are scoped per customer (security issue item 6).

A customer-bound client used to get 409 "id already in use" for another customer's id and
201 for a free one (an oracle on other customers' ids), and could reserve ids before their
owner used them. GET of a foreign job also loaded the whole job before the visibility
check, so it took measurably longer than GET of an unknown id. Now the stored id of a
customer-bound submission is `{customer}~{chosen id}`: two customers can never collide,
and every route checks visibility with a small read before loading a payload.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from hub.settings import ClientToken
from shared.broker import Broker
from shared.job import JobStatus
from shared.settings import BrokerSettings
from tests.hub_support import (
    ACME,
    ACME_TOKEN,
    OPERATOR,
    RunningHub,
    hub_client,
    hub_settings,
    recv_json,
    recv_until,
    running_hub,
    ws_connect,
)
from tests.worker_support import finished, sim, worker_settings
from worker.links import GatewayLink

GLOBEX_TOKEN = "globex-client-token-1"
GLOBEX = {"Authorization": f"Bearer {GLOBEX_TOKEN}"}


def settings(redis_url: str) -> Any:
    base = hub_settings(redis_url, BrokerSettings())
    tokens = (*base.client_tokens, ClientToken(GLOBEX_TOKEN, "globex"))
    return dataclasses.replace(base, client_tokens=tokens)


@pytest.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(settings(redis_url)) as client:
        yield client


async def post(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.post("/jobs", json={"service_type": "comfyui", **body}, headers=headers)


async def test_two_customers_choosing_the_same_id_never_collide(api: httpx.AsyncClient) -> None:
    """Attack: a customer-bound client submits ids another customer uses (or will use):
    409 meant "taken by someone", 201 "free", and an early 201 reserved the id against its
    owner. Refused: every customer's chosen ids live in its own space: both get 201, each
    reads back its own job under the id it chose, and a repeat is the submitter's own
    idempotent 200."""
    theirs = await post(api, GLOBEX, id="order-1", payload={"who": "globex"})
    assert theirs.status_code == 201, theirs.text
    mine = await post(api, ACME, id="order-1", payload={"who": "acme"})
    assert mine.status_code == 201, mine.text  # was 409: globex's id leaked
    reserved = await post(api, ACME, id="order-2", payload={"who": "acme"})
    assert reserved.status_code == 201
    late_owner = await post(api, GLOBEX, id="order-2", payload={"who": "globex"})
    assert late_owner.status_code == 201  # acme's early use reserved nothing for globex
    assert (await post(api, ACME, id="order-1")).status_code == 200
    for headers, who in ((ACME, "acme"), (GLOBEX, "globex")):
        for chosen in ("order-1", "order-2"):
            response = await api.get(f"/jobs/{chosen}", headers=headers)
            assert response.status_code == 200, response.text
            job = response.json()
            assert (job["customer_id"], job["payload"]) == (who, {"who": who})
            assert job["id"] == f"{who}~{chosen}"  # the stored id, as Location names it
            again = await api.get(f"/jobs/{job['id']}", headers=headers)
            assert again.json()["id"] == job["id"]
    # The operator sees both, under their stored ids.
    assert (await api.get("/jobs/acme~order-1", headers=OPERATOR)).status_code == 200
    assert (await api.get("/jobs/acme~order-1", headers=GLOBEX)).status_code == 404


async def command_counts(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_a_foreign_job_costs_what_an_unknown_id_costs(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    """Attack: time GET /jobs/{id} of another customer's job against an unknown id: the
    foreign job was loaded whole (payload included) before the visibility check. Refused:
    both answer the same 404 after the same Redis commands, and no job hash is read whole."""
    big = {"blob": "x" * 200_000}
    foreign = (await post(api, GLOBEX, payload=big)).json()["id"]

    async def work(job_id: str) -> dict[str, int]:
        before = await command_counts(redis)
        response = await api.get(f"/jobs/{job_id}", headers=ACME)
        assert response.status_code == 404
        assert response.json()["error"]["field"] == "id"
        after = await command_counts(redis)
        changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        for other in ("info", "xread"):  # the test's own reads; the hub's event reader
            changed.pop(other, None)
        return changed

    on_foreign, on_unknown = await work(foreign), await work("job-unknown")
    assert "hgetall" not in on_foreign, on_foreign
    assert on_foreign == on_unknown


async def test_the_chosen_id_works_on_every_path_a_bound_client_uses(
    redis_url: str, broker: Broker
) -> None:
    """Attack: the scoping must not open a side door, nor break the bound client's own
    paths. Refused: a legacy `message_id` is scoped the same way (another customer's
    `message_id` creates a separate job); a bound /ws client subscribes by the id it chose;
    a gateway worker claims, heartbeats and completes scoped jobs."""
    async with running_hub(settings(redis_url)) as hub:
        async with hub.client() as http:
            await http.post("/jobs", json={"service_type": "simulation", "id": "shared-name",
                                           "payload": sim()}, headers=GLOBEX)  # fmt: skip
        async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={ACME_TOKEN}") as legacy:
            await recv_json(legacy)
            message = {"type": "submit_job", "job_type": "simulation", "payload": sim(),
                       "message_id": "shared-name"}  # fmt: skip
            await legacy.send(orjson.dumps(message).decode())
            accepted = await recv_json(legacy)
            assert accepted["type"] == "job_accepted", accepted
            assert accepted["job_id"] == "acme~shared-name"
        async with ws_connect(f"{hub.ws_url}/ws?token={ACME_TOKEN}") as ws:
            await recv_json(ws)
            await ws.send('{"type": "subscribe", "job_id": "shared-name"}')
            assert await recv_json(ws) == {"type": "subscribed", "job_id": "acme~shared-name"}
            snapshot = await recv_json(ws)
            assert snapshot["job"]["customer_id"] == "acme"
            await run_through_gateway(hub, broker, ["acme~shared-name", "globex~shared-name"])
            await recv_until(ws, lambda m: m.get("type") == "event"
                             and m["event"]["event"] == "completed")  # fmt: skip


async def run_through_gateway(hub: RunningHub, broker: Broker, ids: list[str]) -> None:
    from tests.integration.test_gateway import issue, make_worker_with_link

    token = await issue(hub, worker_id="gw-ids", services=["simulation"], max_concurrency=2)
    settings = worker_settings("redis://127.0.0.1:1/0", "gw-ids", CONCURRENT_JOBS="2")
    worker = make_worker_with_link(settings, GatewayLink([hub.url], token))
    task = asyncio.create_task(worker.run())
    try:
        for job_id in ids:
            job = await finished(broker, job_id, timeout=30)
            assert (job.status, job.worker_id) == (JobStatus.COMPLETED, "gw-ids")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert not task.exception()
