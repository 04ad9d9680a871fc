"""The pure parts of pools on the hub: routing rules, `?pool=`, the merge of several pools'
indexes into one reading order, and which stored ids a caller's id may mean."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from hub.auth import Principal
from hub.job_access import candidate_ids
from hub.pool_reads import Ref, merge
from hub.pool_routing import check_rules, parse_rules, route, selected_pools
from shared.config import ConfigError
from shared.errors import InvalidInput
from shared.job import JobRequest
from shared.pool_set import PoolSet
from shared.requirements import GeographicRequirement, Requirements
from shared.settings import BrokerSettings

POOLS = ("default", "gpu-eu", "llm", "acme")


def job(**fields: object) -> JobRequest:
    fields.setdefault("service_type", "comfyui")
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_rules_parse_field_value_and_pool_with_colons_and_equals_in_the_value() -> None:
    rules = parse_rules("HUB_POOL_RULES", " region:eu=gpu-eu , customer:a:b=acme,region:x=y=llm,")
    assert [(r.field, r.value, r.pool) for r in rules] == [
        ("region", "eu", "gpu-eu"),
        ("customer", "a:b", "acme"),
        ("region", "x=y", "llm"),
    ]
    assert parse_rules("HUB_POOL_RULES", "") == ()


@pytest.mark.parametrize(
    "text",
    [
        "eu=gpu-eu",
        "region:eu",
        "zone:eu=gpu-eu",
        "service:Comfy UI=llm",  # not a service name (case does not matter: upper is fine)
        "region:eu=Bad!",
        "service:=x",
    ],
)
def test_malformed_rules_name_the_setting(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_rules("HUB_POOL_RULES", text)
    assert refused.value.name == "HUB_POOL_RULES"


def test_a_rule_to_an_unserved_pool_is_refused() -> None:
    rules = parse_rules("HUB_POOL_RULES", "service:llm=llm")
    check_rules("HUB_POOL_RULES", rules, POOLS)
    with pytest.raises(ConfigError, match="llm"):
        check_rules("HUB_POOL_RULES", rules, ("default",))


def test_route_a_named_pool_then_the_first_matching_rule_then_the_default() -> None:
    rules = parse_rules("R", "region:eu=gpu-eu,service:llm=llm,customer:acme=acme")
    eu = Requirements(geographic=GeographicRequirement(region="eu"))
    assert route(job(pool="acme", service_type="llm"), rules, POOLS, "") == "acme"
    assert route(job(service_type="llm", requirements=eu), rules, POOLS, "") == "gpu-eu"
    assert route(job(service_type="llm", customer_id="acme"), rules, POOLS, "") == "llm"
    assert route(job(customer_id="acme"), rules, POOLS, "") == "acme"
    assert route(job(customer_id="globex"), rules, POOLS, "") == "default"
    assert route(job(), (), ("llm", "default"), "") == "llm"
    with pytest.raises(InvalidInput) as refused:
        route(job(pool="mars"), rules, POOLS, "jobs[2].")
    assert refused.value.field == "jobs[2].pool"


def test_the_pool_parameter_selects_one_served_pool_or_all() -> None:
    assert selected_pools(None, POOLS) == POOLS
    assert selected_pools("", POOLS) == POOLS
    assert selected_pools("llm", POOLS) == ("llm",)
    for bad in ("mars", "LLM", "a b"):
        with pytest.raises(InvalidInput) as refused:
            selected_pools(bad, POOLS)
        assert refused.value.field == "pool"


def test_merge_follows_the_index_order_and_pool_order_breaks_ties() -> None:
    per_pool = {"a": [("a1", 1.0), ("a2", 5.0)], "b": [("b1", 1.0), ("b2", 3.0)]}
    assert [r.job_id for r in merge("pending", per_pool)] == ["a1", "b1", "b2", "a2"]
    newest = {"a": [("a1", 9.0), ("a2", 2.0)], "b": [("b1", 9.0), ("b2", 4.0)]}
    merged = merge("completed", newest)
    assert [r.job_id for r in merged] == ["a1", "b1", "b2", "a2"]
    assert merged[3] == Ref("a", "a2", 1)  # its place in its own pool's index


def test_a_customers_own_id_keeps_its_pool_in_front() -> None:
    acme = Principal(role="client", customer_id="acme")
    anyone = Principal(role="client")
    assert candidate_ids(acme, "gpu-eu!order-1") == ["gpu-eu!acme~order-1", "gpu-eu!order-1"]
    assert candidate_ids(acme, "order-1") == ["acme~order-1", "order-1"]
    assert candidate_ids(acme, "gpu-eu!acme~order-1") == ["gpu-eu!acme~order-1"]
    assert candidate_ids(anyone, "gpu-eu!order-1") == ["gpu-eu!order-1"]


def test_keys_of_no_pool_live_under_the_default_pool_whatever_pools_come_first() -> None:
    """Rate limits, grants and webhook retries: one place for every hub on a Redis, so a
    hub listing `gpu-eu` first and one listing `default` first find the same grants."""
    client = Redis()  # never connects: only key names are compared
    eu_first = PoolSet(client, BrokerSettings(pools=("gpu-eu", "default")))
    default_first = PoolSet(client, BrokerSettings(pools=("default", "gpu-eu")))
    eu_only = PoolSet(client, BrokerSettings(pools=("gpu-eu",)))
    assert eu_first.default.pool == "gpu-eu"
    assert {p.fleet_wide.keys.gateway_grants for p in (eu_first, default_first, eu_only)} == {
        default_first.default.keys.gateway_grants
    }
