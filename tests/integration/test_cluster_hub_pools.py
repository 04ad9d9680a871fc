"""A hub serving several pools (tests/integration/test_pools_hub.py), run again on a Redis
Cluster: the same tests, with the hub's and the tests' clients on the session's cluster and
a base prefix of the test's own without a hash tag, so the four pools get tags of their own
and spread over the primaries. Routing, ids, listings merged across pools, statistics and
the worker listing then read from several primaries.

Not imported: the tests that start a hub or a worker from `redis_url` (a single server's
URL) themselves.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.redis_types import RedisClient
from shared.settings import BrokerSettings
from tests.hub_support import hub_client

# ruff: noqa: F401 - imported to be collected: these are the tests this module runs.
from tests.integration.test_pools_hub import (
    POOLS,
    pools,
    settings_for,
    test_a_batch_goes_to_several_pools_and_answers_in_its_own_order,
    test_a_customers_own_id_is_found_in_its_pool_by_the_id_it_chose,
    test_a_submission_naming_a_pool_is_queued_there_and_its_id_says_so,
    test_a_worker_in_several_pools_is_listed_once_and_paused_in_all,
    test_an_id_naming_a_pool_the_hub_does_not_serve_is_an_unknown_job,
    test_an_unserved_or_malformed_pool_is_a_400_naming_pool_and_nothing_is_written,
    test_every_route_that_takes_an_id_finds_a_job_in_its_pool,
    test_listings_cover_every_status_of_every_pool_or_one_pool,
    test_listings_merge_the_pools_in_queue_order_page_by_page,
    test_rules_route_by_region_service_and_customer_first_match_wins,
    test_stats_and_metrics_sum_the_pools_and_break_them_down,
    test_the_api_document_describes_pool_and_the_pool_parameter,
)
from tests.redis_servers import Cluster


@pytest.fixture
def redis(cluster_redis: RedisClient) -> RedisClient:
    return cluster_redis


@pytest.fixture
def pooled(broker_settings: BrokerSettings) -> BrokerSettings:
    return dataclasses.replace(broker_settings, prefix=f"t{uuid.uuid4().hex[:12]}:", pools=POOLS)


@pytest.fixture
async def api(redis_cluster: Cluster, pooled: BrokerSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(settings_for("", pooled), redis=redis_cluster.settings())
    async with hub_client(settings) as client:
        yield client
