"""The Lua matcher inside the claim agrees with the Python matcher (the specification)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from shared.broker import Broker, Claim
from shared.capabilities import Capabilities
from shared.job import JobRequest
from shared.keys import Keys
from shared.lua_source import function_name, library
from shared.matching import Demand, RunningCustomer, matches
from shared.requirements import Requirements
from shared.validation import convert

CUSTOMERS = ["", "acme", "beta"]
ISOLATION = st.sampled_from(["strict", "loose", "none"])
GPU_NAMES = ["NVIDIA H200", "NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB", "H100", ""]
CCS = ["7.5", "8.0", "8.9", "9.0", "10.0", "8.10"]
MEMORY = st.one_of(st.sampled_from([8.0, 16.0, 24.0, 24.5, 40.0, 80.0, 140.4]), st.floats(0, 200))


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


gpu_requirement = st.builds(
    lambda m, c, n, cc: drop_none(
        {"memory_gb": m, "count": c, "model": n, "compute_capability": cc}
    ),
    optional(MEMORY),
    optional(st.integers(1, 3)),
    optional(st.sampled_from(["H200", "h100", "RTX 4090", "A100", "4090", "rtx"])),
    optional(st.sampled_from(CCS)),
)
requirements = st.builds(
    lambda hw, models, iso, quality, region, compliance, cost: drop_none(
        {
            "hardware": hw,
            "models": models,
            "customer_isolation": iso,
            "performance": None if quality is None else {"quality": quality},
            "geographic": None if region is None and not compliance else drop_none({"region": region, "compliance": compliance}),
            "cost": None if cost is None else {"max_per_hour": cost},
        }
    ),
    optional(
        st.builds(
            lambda g, c, r: drop_none({"gpu": g, "cpu_cores": c, "ram_gb": r}),
            optional(gpu_requirement),
            optional(st.integers(1, 64)),
            optional(st.floats(0, 512)),
        )
    ),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True),
    ISOLATION,
    optional(st.sampled_from(["fast", "balanced", "quality"])),
    optional(st.sampled_from(["eu-west", "us-east"])),
    st.lists(st.sampled_from(["gdpr", "soc2"]), max_size=2, unique=True),
    optional(st.floats(0, 5)),
)  # fmt: skip
capabilities = st.builds(
    lambda services, gpus, cores, ram, models, iso, allowed, denied, quality, region, comp, cost: {
        "services": services,
        "hardware": {"gpus": gpus, "cpu_cores": cores, "ram_gb": ram},
        "models": models,
        "customer_access": {"isolation": iso, "allowed_customers": allowed, "denied_customers": denied},
        "performance": {"quality_levels": quality},
        "geographic": {"region": region, "compliance": comp},
        "cost": {"per_hour": cost},
    },
    st.lists(st.sampled_from(["sim", "comfyui"]), min_size=1, max_size=2, unique=True),
    st.lists(
        st.builds(
            lambda m, n, cc: drop_none({"memory_gb": m, "name": n, "compute_capability": cc}),
            MEMORY,
            st.sampled_from(GPU_NAMES),
            optional(st.sampled_from(CCS)),
        ),
        max_size=3,
    ),
    st.integers(0, 64),
    st.floats(0, 512),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True),
    ISOLATION,
    st.lists(st.sampled_from(["acme", "beta"]), max_size=2, unique=True),
    st.lists(st.sampled_from(["acme", "beta"]), max_size=2, unique=True),
    st.lists(st.sampled_from(["fast", "balanced", "quality"]), max_size=3, unique=True),
    optional(st.sampled_from(["eu-west", "us-east"])),
    st.lists(st.sampled_from(["gdpr", "soc2"]), max_size=2, unique=True),
    st.floats(0, 5),
)  # fmt: skip
running = st.lists(st.tuples(st.sampled_from(CUSTOMERS), ISOLATION), max_size=2)


@pytest.fixture
def match_script(redis_url: str) -> Any:
    """match.lua as the library runs it: FCALL, so that the capability memo (matching.lua)
    carries over from one example to the next, through its generations (over a thousand
    examples, more than two generations of distinct documents)."""
    client = SyncRedis.from_url(redis_url)
    client.function_load(library(), replace=True)
    yield lambda *args: client.fcall(
        function_name("match"), 1, Keys().pending, "", 1000, 1000, *args
    )
    client.close()


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    service=st.sampled_from(["sim", "comfyui"]),
    customer=st.sampled_from(CUSTOMERS),
    req_doc=requirements,
    caps_doc=capabilities,
    run=running,
)
def test_lua_matcher_agrees_with_python(
    match_script: Any,
    service: str,
    customer: str,
    req_doc: dict[str, Any],
    caps_doc: dict[str, Any],
    run: list[tuple[str, str]],
) -> None:
    req = convert(req_doc, Requirements)
    offer = convert(caps_doc, Capabilities)
    expected = matches(
        Demand(service, customer, req),
        offer,
        [RunningCustomer(c, i) for c, i in run],  # type: ignore[arg-type]
    )
    event(f"matches={expected}")
    reason = match_script(
        service,
        customer,
        msgspec.json.encode(req),
        msgspec.json.encode(offer),
        orjson.dumps([{"customer": c, "isolation": i} for c, i in run]),
    )
    assert (reason == b"") is expected, (reason, req_doc, caps_doc, run)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(customer=st.sampled_from(["acme", "beta"]), req_doc=requirements, caps_doc=capabilities)
def test_claim_takes_a_job_exactly_when_python_says_it_matches(
    redis_url: str, customer: str, req_doc: dict[str, Any], caps_doc: dict[str, Any]
) -> None:
    async def scenario() -> None:
        client = Redis.from_url(redis_url)
        try:
            await client.flushdb()
            broker = Broker(client)
            request = convert(
                {"service_type": "sim", "customer_id": customer, "requirements": req_doc},
                JobRequest,
            )
            offer = convert(caps_doc, Capabilities)
            await broker.submit(request)
            claimed = isinstance(await broker.claim("w", offer), Claim)
            expected = matches(Demand("sim", customer, request.requirements), offer)
            event(f"matches={expected}")
            assert claimed is expected, (req_doc, caps_doc)
        finally:
            await client.aclose()

    asyncio.run(scenario())
