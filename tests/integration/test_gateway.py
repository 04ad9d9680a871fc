"""The worker gateway: untrusted workers reach the broker only through a hub, within a grant.

Each attack below is what a hostile gateway worker would try with its own valid token:
claim outside its grant, report on another worker's job, read a job it never claimed, act on
after revocation. The hub, Redis and the gateway client are real; a direct worker is a
Broker used as a trusted worker would use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from shared.broker import Broker, Claim, NoClaim
from shared.capabilities import (
    Capabilities,
    CustomerAccess,
    GeographicCapabilities,
)
from shared.gateway_protocol import PATH
from shared.job import JobStatus
from shared.requirements import GeographicRequirement, Requirements
from shared.settings import BrokerSettings
from tests.factories import job as job_request
from tests.helpers import wait_until
from tests.hub_support import (
    OPERATOR,
    RunningHub,
    capabilities,
    claim,
    hub_settings,
    running_hub,
    start_worker,
)
from tests.worker_support import finished, sim, worker_settings
from worker.gateway_client import GatewayCallError, GatewayClient, GatewayRefused
from worker.links import GatewayLink


@pytest.fixture
async def hub(redis_url: str, broker_settings: BrokerSettings) -> AsyncIterator[RunningHub]:
    async with running_hub(hub_settings(redis_url, broker_settings)) as running:
        yield running


async def issue(hub: RunningHub, **grant: Any) -> str:
    grant.setdefault("services", ["comfyui"])
    async with hub.client() as http:
        response = await http.post("/gateway/grants", json=grant, headers=OPERATOR)
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


@pytest.fixture
async def gateway(hub: RunningHub) -> AsyncIterator[GatewayClient]:
    client = GatewayClient([hub.url], await issue(hub, worker_id="gw-1", max_concurrency=2))
    try:
        yield client
    finally:
        await client.aclose()


def greedy_caps() -> Capabilities:
    """What a hostile box declares: every service, dedicated to acme, every attestation."""
    base = capabilities(services=["comfyui", "a1111"])
    return Capabilities(
        services=base.services,
        hardware=base.hardware,
        customer_access=CustomerAccess(isolation="strict", allowed_customers=["acme"]),
        geographic=GeographicCapabilities(region="eu", compliance=["hipaa"]),
    )


async def test_claims_stay_within_the_grant(gateway: GatewayClient, broker: Broker) -> None:
    """Attack: a gateway worker declares every service, strict dedication to acme and every
    compliance label, and claims under another worker id. Refused: its capabilities are
    narrowed to its grant and its id is the token's, so it gets only the plain job."""
    await broker.submit(job_request("a1111", id="other-service"))
    await broker.submit(job_request("comfyui", id="dedicated", customer_id="acme",
                                    requirements=Requirements(customer_isolation="strict")))  # fmt: skip
    await broker.submit(job_request("comfyui", id="hipaa-only",
                                    requirements=Requirements(geographic=GeographicRequirement(compliance=["hipaa"]))))  # fmt: skip
    await broker.submit(job_request("comfyui", id="plain"))

    await gateway.register_worker("ignored", greedy_caps(), {})
    first = await gateway.claim("ignored", greedy_caps())
    assert isinstance(first, Claim)
    assert first.job.id == "plain"
    assert first.job.worker_id == "gw-1"  # the token's worker id, not the one asked for
    assert await gateway.claim("ignored", greedy_caps()) == NoClaim("empty", None)

    worker = await broker.redis.hget(broker.keys.worker("gw-1"), "capabilities")
    registered = orjson.loads(worker or b"{}")
    assert registered["services"] == ["comfyui"]
    assert registered["customer_access"]["isolation"] != "strict"
    assert registered["geographic"]["compliance"] == []
    for job_id in ("other-service", "dedicated", "hipaa-only"):
        job = await broker.get(job_id)
        assert job is not None
        assert job.status == JobStatus.PENDING


async def test_a_dedicated_grant_serves_only_its_customers(hub: RunningHub, broker: Broker) -> None:
    token = await issue(
        hub, worker_id="gw-acme", isolation="strict", customers=["acme"], max_concurrency=2
    )
    client = GatewayClient([hub.url], token)
    try:
        await broker.submit(job_request("comfyui", id="globex-job", customer_id="globex"))
        await broker.submit(job_request("comfyui", id="acme-job", customer_id="acme",
                                        requirements=Requirements(customer_isolation="strict")))  # fmt: skip
        caps = capabilities(services=["comfyui"])
        got = await client.claim("gw-acme", caps)
        assert isinstance(got, Claim)
        assert got.job.id == "acme-job"
        assert await client.claim("gw-acme", caps) == NoClaim("empty", None)
    finally:
        await client.aclose()


async def test_max_concurrency_caps_the_leases_held(gateway: GatewayClient, broker: Broker) -> None:
    for n in range(4):
        await broker.submit(job_request("comfyui", id=f"job-{n}"))
    caps = capabilities()
    first, second = await gateway.claim("gw-1", caps), await gateway.claim("gw-1", caps)
    assert isinstance(first, Claim)
    assert isinstance(second, Claim)
    assert await gateway.claim("gw-1", caps) == NoClaim("limit", None)
    fence, follow_up = await gateway.complete_and_claim(
        "gw-1", first.job.id, first.token, {"ok": 1}, Broker.encode_capabilities(caps)
    )
    assert fence == "ok"
    assert isinstance(follow_up, Claim)
    assert follow_up.job.id == "job-2"
    assert await broker.lease_count("gw-1") == 2


async def test_reports_on_another_workers_job_are_refused(
    gateway: GatewayClient, broker: Broker
) -> None:
    """Attack: a gateway worker that knows another worker's job id and claim token reports
    progress, completes, fails, releases and cancels it. Refused: every fenced report
    answers `stale`, the cancel is forbidden, and the job is untouched."""
    await broker.submit(job_request("comfyui", id="theirs"))
    caps = await start_worker(broker, "direct-1")
    held = await claim(broker, "direct-1", caps)  # the token is known: the worst case
    assert await gateway.progress("gw-1", "theirs", held.token, 99, "forged") == "stale"
    assert await gateway.complete("gw-1", "theirs", held.token, {"forged": True}) == "stale"
    assert await gateway.fail("gw-1", "theirs", held.token, "forged", retryable=False) == "stale"
    assert await gateway.release("gw-1", "theirs", held.token, "forged") == "stale"
    with pytest.raises(GatewayCallError, match="forbidden"):
        await gateway.cancel("theirs", "forged")
    job = await broker.get("theirs")
    assert job is not None
    assert (job.status, job.worker_id, job.progress, job.result) == (
        JobStatus.ACTIVE, "direct-1", 0.0, None
    )  # fmt: skip
    assert await broker.complete("direct-1", "theirs", held.token, {"ok": 1}) == "ok"


async def test_no_operation_reads_a_job(gateway: GatewayClient, broker: Broker) -> None:
    """Attack: ask the gateway for a job, a raw key or a script (`get`, `hgetall`, `eval`),
    or claim with a worker id of one's choosing. Refused: no such operation exists, and an
    unknown argument is invalid."""
    await broker.submit(job_request("comfyui", id="secret", customer_id="acme"))
    for op, args in [
        ("get", {"job_id": "secret"}),
        ("hgetall", {"key": "job:secret"}),
        ("eval", {"script": "return redis.call('KEYS', '*')"}),
    ]:
        with pytest.raises(GatewayCallError, match="unknown operation"):
            await gateway.call(op, args)
    with pytest.raises(GatewayCallError, match="invalid"):
        await gateway.call("claim", {"caps": {}, "worker_id": "someone-else"})


async def test_the_hub_answers_bad_frames_and_keeps_the_connection(
    hub: RunningHub, gateway: GatewayClient
) -> None:
    await gateway.register_worker("gw-1", capabilities(), {})
    ws = gateway._ws  # the client's own socket: send what the client never would
    assert ws is not None
    for frame in ["not json", "[]", '{"id": "x", "op": "claim"}', '{"id": 1}']:
        await ws.send(frame)
    assert await gateway.heartbeat("gw-1", status="idle") == []


async def test_a_revoked_token_is_cut_off_and_its_jobs_go_back(
    hub: RunningHub, gateway: GatewayClient, broker: Broker
) -> None:
    """Attack: keep working, heartbeating and reconnecting after the operator revoked the
    gateway token. Refused: the connection is cut on every hub, new connections are
    refused, and the jobs it held go back to the queue."""
    await broker.submit(job_request("comfyui", id="held"))
    await gateway.register_worker("gw-1", capabilities(), {})
    got = await gateway.claim("gw-1", capabilities())
    assert isinstance(got, Claim)
    async with hub.client() as http:
        response = await http.post("/gateway/grants/gw-1/revoke", headers=OPERATOR)
    assert response.status_code == 204

    async def refused() -> bool:
        try:
            await gateway.heartbeat("gw-1", running={"held": got.token})
        except GatewayRefused:
            return True
        except ConnectionError:
            return False
        return False

    await wait_until(refused, timeout=10, message="the revoked worker is refused")
    await wait_until(
        lambda: _status(broker, "held", JobStatus.PENDING), timeout=10, message="job requeued"
    )
    assert await broker.lease_count("gw-1") == 0
    again = GatewayClient([hub.url], gateway._token)
    with pytest.raises(GatewayRefused):
        await again.heartbeat("gw-1")
    await again.aclose()


async def _status(broker: Broker, job_id: str, status: JobStatus) -> Any:
    job = await broker.get(job_id)
    return job if job is not None and job.status == status else None


@pytest.mark.parametrize(
    "header", [None, "Bearer egw.gw-1.not-the-secret", "Bearer operator-token-0001"]
)
async def test_connections_without_a_valid_gateway_token_are_refused(
    hub: RunningHub, header: str | None
) -> None:
    """Attack: open the gateway with no token, a forged one, or the operator's token.
    Refused: 403 before the WebSocket opens."""
    headers = {"Authorization": header} if header else {}
    url = hub.ws_url + PATH
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers, open_timeout=5):
            pass
    assert refused.value.response.status_code == 403


async def test_cancels_are_pushed_to_the_gateway_worker(
    hub: RunningHub, gateway: GatewayClient, broker: Broker
) -> None:
    cancelled: list[str] = []
    gateway.on_cancel = cancelled.append
    await broker.submit(job_request("comfyui", id="to-cancel"))
    await gateway.register_worker("gw-1", capabilities(), {})
    got = await gateway.claim("gw-1", capabilities())
    assert isinstance(got, Claim)
    await wait_until(lambda: hub.app.state.hub.gateway.listening.is_set(), timeout=5)
    async with hub.client() as http:
        response = await http.post("/jobs/to-cancel/cancel", headers=OPERATOR, json={})
    assert response.status_code == 200, response.text
    await wait_until(lambda: cancelled == ["to-cancel"], timeout=10, message="cancel pushed")


async def test_a_wait_ends_when_work_arrives(gateway: GatewayClient, broker: Broker) -> None:
    await gateway.register_worker("gw-1", capabilities(), {})
    waiting = asyncio.create_task(gateway.wait_for_work(["comfyui"], 30))
    await asyncio.sleep(0)
    await broker.submit(job_request("comfyui", id="wake"))
    hops = await asyncio.wait_for(waiting, 20)
    assert hops is not None
    got = await gateway.claim("gw-1", capabilities(), hops=hops)
    assert isinstance(got, Claim)
    assert got.job.id == "wake"


async def test_a_wait_ends_when_the_worker_is_rung_on_its_own_doorbell(
    gateway: GatewayClient, broker: Broker
) -> None:
    """The hub waits on the doorbell of the worker its grant names (the fit policy rings it),
    whatever id the worker would pass."""
    await gateway.register_worker("gw-1", capabilities(), {})
    waiting = asyncio.create_task(gateway.wait_for_work(["comfyui"], 30, worker_id="other"))
    await wait_until(lambda: _blocked(broker), timeout=10, message="the hub blocks for gw-1")
    await broker.redis.lpush(broker.keys.wake("gw-1"), "0")
    assert await asyncio.wait_for(waiting, 20) == 0


async def _blocked(broker: Broker) -> bool:
    return int((await broker.redis.info("clients"))["blocked_clients"]) > 0


async def test_a_worker_process_runs_jobs_through_the_gateway(
    hub: RunningHub, redis_url: str, broker: Broker
) -> None:
    """The real Worker, with a gateway link instead of Redis: same runtime, same results."""
    token = await issue(hub, worker_id="gw-sim", services=["simulation"], max_concurrency=2)
    settings = worker_settings("redis://127.0.0.1:1/0", "gw-sim", CONCURRENT_JOBS="2")
    worker = make_worker_with_link(settings, GatewayLink([hub.url], token))
    task = asyncio.create_task(worker.run())
    try:
        async with hub.client() as http:
            ids = []
            for n in range(5):
                body = {"service_type": "simulation", "payload": sim(n=n)}
                response = await http.post("/jobs", json=body, headers=OPERATOR)
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
        for job_id in ids:
            job = await finished(broker, job_id, timeout=30)
            assert (job.status, job.worker_id) == (JobStatus.COMPLETED, "gw-sim")
        live = await broker.redis.zscore(broker.keys.workers, "gw-sim")
        assert live is not None  # heartbeats arrive through the gateway
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    assert not task.exception()


def make_worker_with_link(settings: Any, link: GatewayLink) -> Any:
    from worker.cli import detect_hardware, load_connectors
    from worker.runtime import Worker

    return Worker(settings, load_connectors(settings), detect_hardware(settings), link=link)


async def test_two_claims_at_once_cannot_both_pass_the_concurrency_cap(
    hub: RunningHub, broker: Broker
) -> None:
    """Attack: one worker token on two connections (as through two hubs) claims on both at
    the same moment, to hold more jobs than its grant allows. Refused: the cap is checked
    inside the claim script, so exactly one claim gets a job."""
    token = await issue(hub, worker_id="gw-racer", max_concurrency=1)
    first, second = GatewayClient([hub.url], token), GatewayClient([hub.url], token)
    try:
        for n in range(2):
            await broker.submit(job_request("comfyui", id=f"race-{n}"))
        caps = capabilities()
        results = await asyncio.gather(first.claim("x", caps), second.claim("x", caps))
        assert sorted(type(r).__name__ for r in results) == ["Claim", "NoClaim"]
        assert NoClaim("limit", None) in results
        assert await broker.lease_count("gw-racer") == 1
    finally:
        await first.aclose()
        await second.aclose()
