"""The hub serves pools (shared/pools.py): it routes each submission to one pool, finds a job
by the pool its id names, lists, counts and streams every pool it serves (or one, with
`?pool=`), and maintains each of them. Real Redis, real hub; workers drive the Broker of
their pool directly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from starlette.responses import Response

from emp.cli import main as cli_main
from hub.maintenance import Maintenance
from hub.pool_routing import parse_rules
from hub.settings import HubSettings
from shared.capabilities import Capabilities, GeographicCapabilities
from shared.config import ConfigError
from shared.job import JobRequest
from shared.pool_set import PoolSet
from shared.settings import BrokerSettings
from tests.helpers import wait_until
from tests.hub_support import (
    ACME,
    ACME_TOKEN,
    CLIENT,
    CLIENT_TOKEN,
    OPERATOR,
    OPERATOR_TOKEN,
    capabilities,
    claim,
    hub_client,
    hub_settings,
    recv_json,
    recv_until,
    running_hub,
    start_worker,
    ws_connect,
)
from tests.sdk_support import client
from tests.webhook_support import Delivery, Receiver, receiving, webhook_settings

POOLS = ("default", "gpu-eu", "llm", "acme")
RULES = "region:eu=gpu-eu,service:llm=llm,customer:acme=acme"


@pytest.fixture
def pooled(broker_settings: BrokerSettings) -> BrokerSettings:
    return dataclasses.replace(broker_settings, pools=POOLS)


def settings_for(redis_url: str, broker: BrokerSettings, **overrides: Any) -> HubSettings:
    return hub_settings(
        redis_url, broker, pool_rules=parse_rules("HUB_POOL_RULES", RULES), **overrides
    )


@pytest.fixture
async def api(redis_url: str, pooled: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(settings_for(redis_url, pooled)) as client:
        yield client


@pytest.fixture
def pools(redis: Redis, pooled: BrokerSettings) -> PoolSet:
    """The same pools as the hub's, for the simulated workers and for looking in Redis."""
    return PoolSet(redis, pooled)


async def submit(
    api: httpx.AsyncClient, headers: dict[str, str] = CLIENT, **body: Any
) -> dict[str, Any]:
    body.setdefault("service_type", "comfyui")
    response = await api.post("/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def in_eu() -> dict[str, Any]:
    return {"geographic": {"region": "eu"}}


def in_eu_worker() -> Capabilities:
    return capabilities(geographic=GeographicCapabilities(region="eu"))


# -- routing ----------------------------------------------------------------------------


async def test_a_submission_naming_a_pool_is_queued_there_and_its_id_says_so(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    response = await api.post(
        "/jobs", json={"service_type": "comfyui", "pool": "llm"}, headers=CLIENT
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert job_id.startswith("llm!job-")
    assert response.headers["Location"] == f"/jobs/{job_id}"
    llm = pools.get("llm")
    assert llm is not None
    assert (await llm.get(job_id)) is not None
    assert await llm.pending_count() == 1
    assert await pools.default.pending_count() == 0


async def test_rules_route_by_region_service_and_customer_first_match_wins(
    api: httpx.AsyncClient,
) -> None:
    by_region = await submit(api, requirements=in_eu())
    by_service = await submit(api, service_type="llm")
    by_customer = await submit(api, customer_id="acme")
    by_bound_token = await submit(api, ACME)  # the token fills in its customer: acme
    first_rule = await submit(api, service_type="llm", requirements=in_eu())
    named = await submit(api, service_type="llm", pool="default")  # a name beats every rule
    unmatched = await submit(api, service_type="comfyui", customer_id="globex")
    assert by_region["id"].startswith("gpu-eu!")
    assert by_service["id"].startswith("llm!")
    assert by_customer["id"].startswith("acme!")
    assert by_bound_token["id"].startswith("acme!")
    assert first_rule["id"].startswith("gpu-eu!")
    assert "!" not in named["id"]
    assert "!" not in unmatched["id"]  # the hub's default pool: ids carry no pool


async def test_without_rules_everything_goes_to_the_first_pool_listed(
    redis_url: str, pooled: BrokerSettings, pools: PoolSet
) -> None:
    first_llm = dataclasses.replace(pooled, pools=("llm", "default"))
    async with hub_client(hub_settings(redis_url, first_llm)) as api:
        job = await submit(api, requirements=in_eu())
    assert job["id"].startswith("llm!")


async def test_an_unserved_or_malformed_pool_is_a_400_naming_pool_and_nothing_is_written(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    keys_before = await redis.dbsize()
    for pool in ("mars", "GPU", "gpu eu", "x" * 40, "", 7):
        response = await api.post(
            "/jobs", json={"service_type": "comfyui", "pool": pool}, headers=CLIENT
        )
        assert response.status_code == 400, (pool, response.text)
        assert response.json()["error"]["field"] == "pool", pool
    batch = await api.post(
        "/jobs/batch",
        json={
            "jobs": [{"service_type": "a", "pool": "llm"}, {"service_type": "b", "pool": "mars"}]
        },
        headers=CLIENT,
    )
    assert batch.status_code == 400
    assert batch.json()["error"]["field"] == "jobs[1].pool"
    assert await redis.dbsize() == keys_before  # not even the valid first job of the batch


def test_a_rule_routing_to_a_pool_not_in_pools_stops_the_hub_at_start_up() -> None:
    env = {"HUB_AUTH": "off", "POOLS": "default,gpu-eu", "HUB_POOL_RULES": "region:eu=mars"}
    with pytest.raises(ConfigError) as refused:
        HubSettings.from_env(env)
    assert refused.value.name == "HUB_POOL_RULES"
    assert "mars" in str(refused.value)
    for bad in ("region=gpu-eu", "colour:red=gpu-eu", "service:L M=gpu-eu", "region:eu=GPU"):
        with pytest.raises(ConfigError) as malformed:
            HubSettings.from_env({**env, "HUB_POOL_RULES": bad})
        assert malformed.value.name == "HUB_POOL_RULES", bad
    ok = HubSettings.from_env({**env, "HUB_POOL_RULES": "region:eu=gpu-eu"})
    assert [str(rule) for rule in ok.pool_rules] == ["region:eu=gpu-eu"]


async def test_a_batch_goes_to_several_pools_and_answers_in_its_own_order(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    jobs = [
        {"service_type": "llm", "id": "b1"},
        {"service_type": "comfyui", "id": "b2"},
        {"service_type": "comfyui", "id": "b3", "requirements": in_eu()},
        {"service_type": "comfyui", "id": "b4", "pool": "llm"},
        {"service_type": "comfyui", "id": "b5"},
    ]
    response = await api.post("/jobs/batch", json={"jobs": jobs}, headers=CLIENT)
    assert response.status_code == 201, response.text
    answer = response.json()["jobs"]
    assert [j["id"] for j in answer] == ["llm!b1", "b2", "gpu-eu!b3", "llm!b4", "b5"]
    assert all(j["created"] and j["status"] == "pending" for j in answer)
    # Each pool's queue keeps the batch's order; positions count within the pool.
    assert [j["queue_position"] for j in answer] == [0, 0, 0, 1, 1]
    again = await api.post("/jobs/batch", json={"jobs": jobs}, headers=CLIENT)
    assert again.status_code == 200
    assert [j["created"] for j in again.json()["jobs"]] == [False] * 5
    counts = {b.pool: await b.pending_count() for b in pools}
    assert counts == {"default": 2, "gpu-eu": 1, "llm": 2, "acme": 0}


# -- finding a job ----------------------------------------------------------------------


async def test_every_route_that_takes_an_id_finds_a_job_in_its_pool(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    gpu = pools.get("gpu-eu")
    llm = pools.get("llm")
    assert gpu is not None
    assert llm is not None
    job_id = (await submit(api, requirements=in_eu(), payload={"n": 1}))["id"]
    shown = (await api.get(f"/jobs/{job_id}", headers=CLIENT)).json()
    assert (shown["id"], shown["payload"], shown["queue_position"]) == (job_id, {"n": 1}, 0)
    assert shown["waiting"]["reason"] == "no_workers"  # judged by gpu-eu's fleet: empty
    caps = await start_worker(gpu, "w1", in_eu_worker())
    got = await claim(gpu, "w1", caps)
    assert got.job.id == job_id
    await gpu.progress("w1", job_id, got.token, 40, "halfway")
    timeline = (await api.get(f"/dashboard/jobs/{job_id}/timeline", headers=OPERATOR)).json()
    assert [e["event"] for e in timeline["events"]] == ["accepted", "claimed", "progress"]
    assert {e["pool"] for e in timeline["events"]} == {"gpu-eu"}
    cancelled = await api.post(f"/jobs/{job_id}/cancel", json={}, headers=CLIENT)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["job"]["status"] == "cancelled"
    polled = (await api.get(f"/jobs/{job_id}?wait=1", headers=CLIENT)).json()
    assert polled["status"] == "cancelled"

    failing = (await submit(api, service_type="llm", max_retries=0))["id"]
    llm_caps = capabilities(services=["llm"])
    await start_worker(llm, "w2", llm_caps)
    got2 = await claim(llm, "w2", llm_caps)
    await llm.fail("w2", failing, got2.token, "boom", retryable=False)
    retried = await api.post(f"/jobs/{failing}/retry", headers=OPERATOR)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"


async def test_a_customers_own_id_is_found_in_its_pool_by_the_id_it_chose(
    api: httpx.AsyncClient,
) -> None:
    created = await submit(api, ACME, id="order-1", pool="gpu-eu")
    assert created["id"] == "gpu-eu!acme~order-1"
    for asked in ("gpu-eu!order-1", "gpu-eu!acme~order-1"):
        found = await api.get(f"/jobs/{asked}", headers=ACME)
        assert found.status_code == 200, asked
        assert found.json()["id"] == created["id"]
    # An unbound client token names the stored id; another customer's job is a 404 to acme.
    assert (await api.get("/jobs/gpu-eu!acme~order-1", headers=CLIENT)).status_code == 200
    assert (await api.get("/jobs/gpu-eu!order-1", headers=CLIENT)).status_code == 404
    foreign = await submit(api, CLIENT, customer_id="globex", pool="gpu-eu")
    hidden = await api.get(f"/jobs/{foreign['id']}", headers=ACME)
    assert hidden.status_code == 404


async def test_an_id_naming_a_pool_the_hub_does_not_serve_is_an_unknown_job(
    api: httpx.AsyncClient,
) -> None:
    unknown = await api.get("/jobs/job-nothing", headers=CLIENT)
    assert unknown.status_code == 404
    for path in ("/jobs/mars!job-1", "/jobs/mars!job-1/events", "/jobs/GPU!x"):
        response = await api.get(path, headers=CLIENT)
        assert response.status_code == 404, path
        assert response.json() == unknown.json()
    for action in ("cancel", "retry"):
        response = await api.post(f"/jobs/mars!job-1/{action}", json={}, headers=OPERATOR)
        assert response.status_code == 404, action
    timeline = await api.get("/dashboard/jobs/mars!job-1/timeline", headers=OPERATOR)
    assert timeline.status_code == 404


# -- reading across pools ---------------------------------------------------------------


async def test_listings_merge_the_pools_in_queue_order_page_by_page(
    api: httpx.AsyncClient,
) -> None:
    """Pending jobs of three pools at interleaved priorities: every page size gives the
    same single queue order (priority first), each job once."""
    expected: list[tuple[int, str]] = []
    for i, pool in enumerate(["default", "gpu-eu", "llm"] * 4):
        priority = (i * 37) % 100
        job = await submit(api, pool=pool, priority=priority)
        expected.append((priority, job["id"]))
    order = [job_id for _, job_id in sorted(expected, key=lambda e: -e[0])]
    for size in (1, 2, 5, 12, 50):
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"status": "pending", "limit": size}
            if cursor:
                params["cursor"] = cursor
            page = (await api.get("/jobs", params=params, headers=CLIENT)).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == order, size


async def test_listings_cover_every_status_of_every_pool_or_one_pool(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    llm = pools.get("llm")
    assert llm is not None
    waiting = await submit(api, pool="gpu-eu")
    done = await submit(api, service_type="llm")
    plain = await submit(api)
    llm_caps = capabilities(services=["llm"])
    await start_worker(llm, "w1", llm_caps)
    got = await claim(llm, "w1", llm_caps)
    await llm.complete("w1", got.job.id, got.token, {})
    everything = (await api.get("/jobs", headers=CLIENT)).json()
    assert {j["id"] for j in everything["jobs"]} == {waiting["id"], done["id"], plain["id"]}
    only_llm = (await api.get("/jobs", params={"pool": "llm"}, headers=CLIENT)).json()
    assert [(j["id"], j["status"]) for j in only_llm["jobs"]] == [(done["id"], "completed")]
    refused = await api.get("/jobs", params={"pool": "mars"}, headers=CLIENT)
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "pool"
    feed = (await api.get("/dashboard/data", headers=OPERATOR)).json()
    assert {j["id"] for j in feed["pending"]} == {waiting["id"], plain["id"]}
    assert [j["id"] for j in feed["recent"]] == [done["id"]]
    one = (await api.get("/dashboard/data", params={"pool": "gpu-eu"}, headers=OPERATOR)).json()
    assert [j["id"] for j in one["pending"]] == [waiting["id"]]
    assert one["recent"] == []
    series = (await api.get("/dashboard/series", headers=OPERATOR)).json()
    assert sum(series["throughput"]["submitted"]) == 3
    assert sum(series["throughput"]["completed"]) == 1
    gpu_series = await api.get("/dashboard/series", params={"pool": "gpu-eu"}, headers=OPERATOR)
    assert sum(gpu_series.json()["throughput"]["submitted"]) == 1


async def test_stats_and_metrics_sum_the_pools_and_break_them_down(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    gpu = pools.get("gpu-eu")
    assert gpu is not None
    await submit(api, pool="gpu-eu", priority=90)
    await submit(api, pool="gpu-eu", priority=10)
    await submit(api, pool="llm")
    await start_worker(gpu, "w1", capabilities())
    stats = (await api.get("/stats", headers=OPERATOR)).json()
    assert stats["jobs"]["pending"] == 3
    assert stats["pending"]["by_priority"] == {"urgent": 0, "high": 1, "normal": 1, "low": 1}
    assert set(stats["pools"]) == set(POOLS)
    assert {p: f["jobs"]["pending"] for p, f in stats["pools"].items()} == {
        "default": 0,
        "gpu-eu": 2,
        "llm": 1,
        "acme": 0,
    }
    assert stats["pools"]["gpu-eu"]["workers"]["total"] == 1
    assert stats["pools"]["llm"]["workers"]["total"] == 0
    one = (await api.get("/stats", params={"pool": "llm"}, headers=OPERATOR)).json()
    assert (one["jobs"]["pending"], list(one["pools"])) == (1, ["llm"])
    refused = await api.get("/stats", params={"pool": "mars"}, headers=OPERATOR)
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "pool")

    text = (await api.get("/metrics", headers=OPERATOR)).text
    assert 'emp_jobs{pool="gpu-eu",status="pending"} 2.0' in text
    assert 'emp_jobs{pool="llm",status="pending"} 1.0' in text
    assert 'emp_workers{pool="gpu-eu",status="idle"} 1.0' in text
    only = (await api.get("/metrics", params={"pool": "llm"}, headers=OPERATOR)).text
    assert 'emp_jobs{pool="llm",status="pending"} 1.0' in only
    assert 'pool="gpu-eu"' not in only
    assert "emp_hub_submissions_total" in only  # this hub's own counters belong to no pool
    assert (await api.get("/metrics?pool=mars", headers=OPERATOR)).status_code == 400


async def test_a_worker_in_several_pools_is_listed_once_and_paused_in_all(
    api: httpx.AsyncClient, pools: PoolSet
) -> None:
    gpu = pools.get("gpu-eu")
    assert gpu is not None
    caps = capabilities(services=["comfyui", "llm"])
    for broker in (pools.default, gpu):
        await start_worker(broker, "w1", caps)
    job = await submit(api, pool="gpu-eu")
    await claim(gpu, "w1", caps)
    listed = (await api.get("/workers", headers=OPERATOR)).json()["workers"]
    assert [(w["id"], w["current_jobs"]) for w in listed] == [("w1", [job["id"]])]
    assert (await api.get("/workers?pool=llm", headers=OPERATOR)).json() == {"workers": []}
    paused = await api.post("/workers/w1/pause", headers=OPERATOR)
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"
    for broker in (pools.default, gpu):
        worker = await broker.reads.fleet.worker("w1")
        assert worker is not None
        assert worker.state == "paused", broker.pool
    assert (await api.post("/workers/nobody/pause", headers=OPERATOR)).status_code == 404


# -- events and maintenance -------------------------------------------------------------


def is_event(kind: str) -> Any:
    return lambda m: m.get("type") == "event" and m["event"]["event"] == kind


async def test_the_live_feed_carries_the_events_of_every_pool(
    redis_url: str, pooled: BrokerSettings, pools: PoolSet
) -> None:
    llm = pools.get("llm")
    assert llm is not None
    async with (
        running_hub(settings_for(redis_url, pooled)) as hub,
        ws_connect(f"{hub.ws_url}/ws?token={OPERATOR_TOKEN}") as ops,
        ws_connect(f"{hub.ws_url}/ws?token={ACME_TOKEN}") as acme,
        hub.client() as http,
    ):
        for ws in (ops, acme):
            assert (await recv_json(ws))["type"] == "welcome"
        await ops.send('{"type": "subscribe", "all": true}')
        await recv_until(ops, lambda m: m["type"] == "subscribed")
        await acme.send('{"type": "subscribe", "customer_id": "acme"}')
        await recv_until(acme, lambda m: m["type"] == "subscribed")
        ids = []
        for body in ({"pool": "gpu-eu"}, {"pool": "llm"}, {}):
            created = await http.post(
                "/jobs", json={"service_type": "comfyui", **body}, headers=ACME
            )
            ids.append(created.json()["id"])
        assert [i.split("!")[0] for i in ids] == ["gpu-eu", "llm", "acme"]
        for ws in (ops, acme):
            seen: set[str] = set()
            while len(seen) < 3:
                event, _ = await recv_until(ws, is_event("accepted"))
                seen.add(event["event"]["job_id"])
            assert seen == set(ids)

        # One job of a non-default pool, followed over SSE until it completes.
        sse_job = ids[1]
        frames: list[str] = []
        async with http.stream("GET", f"/jobs/{sse_job}/events?token={ACME_TOKEN}") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    frames.append(line[7:])
                    if frames == ["snapshot"]:
                        caps = capabilities()
                        await start_worker(llm, "w1", caps)
                        got = await claim(llm, "w1", caps)
                        await llm.complete("w1", got.job.id, got.token, {})
        assert frames == ["snapshot", "claimed", "completed"]
        up, _ = await recv_until(ops, is_event("worker_up"))
        assert (up["event"]["worker_id"], up["event"]["pool"]) == ("w1", "llm")


async def test_legacy_clients_submit_into_pools_and_follow_their_jobs(
    redis_url: str, pooled: BrokerSettings, pools: PoolSet
) -> None:
    gpu = pools.get("gpu-eu")
    assert gpu is not None
    async with (
        running_hub(settings_for(redis_url, pooled)) as hub,
        ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as ws,
    ):
        await recv_json(ws)
        submit_job = {"type": "submit_job", "job_type": "comfyui", "payload": {}}
        await ws.send(orjson.dumps({**submit_job, "requirements": in_eu()}).decode())
        accepted = await recv_json(ws)
        assert accepted["type"] == "job_accepted", accepted
        assert accepted["job_id"].startswith("gpu-eu!")
        caps = in_eu_worker()
        await start_worker(gpu, "w1", caps)
        got = await claim(gpu, "w1", caps)
        await gpu.complete("w1", got.job.id, got.token, {"ok": 1})
        done, _ = await recv_until(ws, lambda m: m["type"] == "complete_job")
        assert (done["job_id"], done["result"]) == (accepted["job_id"], {"ok": 1})
        await ws.send(orjson.dumps({**submit_job, "pool": "mars"}).decode())
        refused = await recv_json(ws)
        assert (refused["type"], refused["details"]["field"]) == ("error", "pool")


async def test_maintenance_reaps_a_dead_workers_job_in_a_non_default_pool(
    redis_url: str, redis: Redis
) -> None:
    short = BrokerSettings(
        lease_timeout=0.3,
        heartbeat_interval=0.1,
        reaper_interval=0.05,
        retry_backoff_base=0.0,
        retry_backoff_cap=0.0,
        pools=POOLS,
    )
    gpu = PoolSet(redis, short).get("gpu-eu")
    assert gpu is not None
    async with hub_client(settings_for(redis_url, short, maintenance=True)) as api:
        job_id = (await submit(api, pool="gpu-eu"))["id"]
        caps = await start_worker(gpu, "w1")
        await claim(gpu, "w1", caps)  # and never heard from again

        async def back_in_queue() -> bool:
            job = (await api.get(f"/jobs/{job_id}", headers=OPERATOR)).json()
            return bool(job["status"] == "pending" and job["attempts"] == 1)

        await wait_until(back_in_queue, message="the hub's gpu-eu loop recovered the job")


async def test_maintaining_a_pool_from_two_hubs_recovers_its_job_once(
    redis_url: str, redis: Redis
) -> None:
    short = BrokerSettings(
        lease_timeout=0.3,
        heartbeat_interval=0.1,
        reaper_interval=0.05,
        retry_backoff_base=0.0,
        retry_backoff_cap=0.0,
        pools=POOLS,
    )
    llm = PoolSet(redis, short).get("llm")
    assert llm is not None
    settings = settings_for(redis_url, short)
    hubs = [Maintenance(llm, settings), Maintenance(llm, settings)]
    job_id = (await llm.submit(JobRequest(service_type="comfyui"))).job_id
    assert job_id.startswith("llm!")
    caps = await start_worker(llm, "w1")
    await claim(llm, "w1", caps)
    recovered = 0

    async def recovered_by_both() -> bool:
        nonlocal recovered
        reports = await asyncio.gather(*(h.tick() for h in hubs))
        recovered += sum(int(r["reaped"]["recovered"]) for r in reports)
        return recovered > 0

    await wait_until(recovered_by_both, message="lease of the dead worker reclaimed")
    for h in hubs:
        await h.tick()
    job = await llm.get(job_id)
    assert job is not None
    assert (job.status, job.attempts, recovered) == ("pending", 1, 1)


# -- the SDK, the CLI and the API document ----------------------------------------------


async def test_the_sdk_and_the_cli_name_pools(
    redis_url: str, pooled: BrokerSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        running_hub(settings_for(redis_url, pooled)) as hub,
        client(hub.url) as sdk,
        client(hub.url, OPERATOR_TOKEN) as ops,
    ):
        handle = await sdk.submit("comfyui", {"n": 1}, pool="llm")
        assert handle.id.startswith("llm!")
        assert handle.job.pool == "llm"
        routed = await sdk.submit("comfyui", requirements=in_eu())
        assert routed.job.pool == "gpu-eu"
        assert [j.id async for j in sdk.jobs(pool="llm")] == [handle.id]
        assert {j.pool async for j in sdk.jobs()} == {"llm", "gpu-eu"}
        stats = await ops.stats(pool="gpu-eu")
        assert stats.raw["jobs"]["pending"] == 1
        assert (await ops.stats()).raw["pools"]["llm"]["jobs"]["pending"] == 1

        def emp(*argv: str) -> int:  # the blocking CLI, off the loop that serves the hub
            return cli_main([*argv, "--hub", hub.url, "--token", CLIENT_TOKEN])

        capsys.readouterr()
        assert await asyncio.to_thread(emp, "submit", "--service", "comfyui", "--pool", "acme") == 0
        submitted = capsys.readouterr().out.strip()
        assert submitted.startswith("acme!")
        assert await asyncio.to_thread(emp, "jobs", "--pool", "acme", "--json") == 0
        assert [j["id"] for j in orjson.loads(capsys.readouterr().out)] == [submitted]
        assert await asyncio.to_thread(emp, "submit", "--service", "comfyui", "--pool", "mars") == 2
        assert "pool" in capsys.readouterr().err


async def test_the_api_document_describes_pool_and_the_pool_parameter(
    api: httpx.AsyncClient,
) -> None:
    doc = (await api.get("/openapi.json")).json()
    pool = doc["components"]["schemas"]["JobRequest"]["properties"]["pool"]
    assert "HUB_POOL_RULES" in orjson.dumps(pool).decode()
    for path in ("/jobs", "/stats", "/metrics", "/workers", "/dashboard/data"):
        names = [p["name"] for p in doc["paths"][path]["get"].get("parameters", [])]
        assert "pool" in names, path
    assert "pool" in doc["info"]["description"]


async def test_webhooks_are_delivered_from_every_pool_and_retried_in_one_place(
    redis_url: str, pooled: BrokerSettings
) -> None:
    async def fail_once(delivery: Delivery, attempt: int) -> Response:
        return Response("busy", status_code=500 if attempt == 0 else 204)

    settings = settings_for(redis_url, pooled, webhooks=webhook_settings())
    async with receiving(Receiver(respond=fail_once)) as rx, hub_client(settings) as api:
        hook = {"url": rx.url, "events": ["accepted"]}
        jobs = [
            (await submit(api, webhook=hook, pool=pool))["id"] for pool in ("default", "gpu-eu")
        ]
        await wait_until(lambda: len(rx.verified) == 4, message="two attempts per job")
    firsts = {d.payload["data"]["job_id"]: d.id for d in rx.verified}
    assert set(firsts) == set(jobs)
    assert "!" not in firsts[jobs[0]]  # the default pool's delivery ids are as they were
    assert firsts[jobs[1]].startswith("gpu-eu!")  # another pool's say which, like its jobs'
    assert sorted(rx.ids().values()) == [2, 2]  # each retried once, under its own id
