"""Claims across pools (tests/integration/test_pool_claims.py), run again on a Redis Cluster:
the same tests, with `redis` a cluster client and a base prefix of the test's own without a
hash tag, so each pool gets its own (`{gpu-eu}:`, `{gpu-us}:`) and lives in a slot of its
own: the peeks of several pools in one pipeline go to several primaries, and a worker waits
with one BLPOP per pool.

Not imported: the tests that read one server's INFO or SCAN its keys, count subscribers with
PUBSUB NUMSUB (one node's count on a cluster; see test_cluster.py for the cluster's
version), start workers from `redis_url`, or wait with one BLPOP across pools, which a
cluster refuses (CROSSSLOT): the pooled worker waits per pool there.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from shared.redis_types import RedisClient
from shared.settings import BrokerSettings

# ruff: noqa: F401 - imported to be collected: these are the tests this module runs.
from tests.integration.test_pool_claims import (
    POOLS,
    pools,
    raced,
    test_a_claim_with_a_floor_takes_nothing_ranked_below_it,
    test_a_job_submitted_between_peek_and_claim_is_passed_over_once,
    test_a_loose_isolation_job_in_one_pool_locks_the_worker_in_the_others,
    test_a_lost_race_never_takes_a_job_ranked_below_another_pools_head,
    test_a_pool_whose_jobs_this_worker_cannot_run_does_not_block_the_others,
    test_a_pool_with_only_low_priority_work_is_served_once_the_better_pool_is_empty,
    test_a_race_lost_in_the_best_pool_falls_to_the_next_pool,
    test_a_wake_up_for_work_the_worker_cannot_do_is_passed_on_in_its_pool,
    test_a_worker_paused_in_one_pool_still_claims_from_the_others,
    test_a_worker_that_loses_every_race_takes_nothing_worse_and_comes_back_at_once,
    test_claims_across_pools_follow_priority_then_age,
    test_every_claim_takes_the_best_head_of_all_pools,
    test_nothing_to_claim_says_when_the_earliest_retry_of_any_pool_is_due,
    test_peek_answers_paused_and_empty_like_the_claim,
    test_registration_heartbeat_state_and_deregistration_reach_every_pool,
    test_reports_and_cancels_go_to_the_pool_of_the_job,
    test_the_older_job_wins_between_pools_at_equal_priority,
    worker,
)


@pytest.fixture
def redis(cluster_redis: RedisClient) -> RedisClient:
    return cluster_redis


@pytest.fixture
def settings(broker_settings: BrokerSettings) -> BrokerSettings:
    return dataclasses.replace(broker_settings, prefix=f"t{uuid.uuid4().hex[:12]}:", pools=POOLS)
