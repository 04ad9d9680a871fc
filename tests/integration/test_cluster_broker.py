"""The broker's specification, run again on a Redis Cluster (three primaries, one replica
each): the ordering, matching, lease and fencing, lifecycle and scheduling-policy tests of
the single-server suite, imported as they are, with `redis`, `broker` and `fast` here made
from a cluster client and a hash-tagged prefix of the test's own (a pool in one slot of the
shared cluster).

Not imported: the tests that open plain Redis clients from `redis_url` or read one server's
INFO (their cluster counterparts are in test_cluster.py), and the head-of-line test, whose
10,000 jobs would stay in the session's cluster.
"""

from __future__ import annotations

import dataclasses

import pytest

from shared.broker import Broker
from shared.redis_types import RedisClient
from shared.settings import BrokerSettings

# ruff: noqa: F401 - imported to be collected: these are the tests this module runs.
from tests.integration.test_broker_concurrency import (
    test_dedicated_worker_scans_only_its_customers_classes,
    test_scan_past_the_budget_still_finds_the_match,
)
from tests.integration.test_broker_leases import (
    SHORT_LEASE,
    test_a_heartbeating_worker_keeps_a_long_job,
    test_a_silent_worker_loses_its_job_after_the_lease_timeout,
    test_a_worker_revived_after_being_presumed_dead_learns_its_jobs_are_gone,
    test_an_orphaned_lease_returns_without_penalty,
    test_execution_timeout_retries_and_signals_the_worker,
    test_heartbeat_reports_cancelled_jobs_as_revoked,
    test_reaping_twice_recovers_once,
    test_zombie_worker_is_fenced_out_after_its_job_moves_on,
)
from tests.integration.test_broker_lifecycle import (
    TestCancel,
    TestIdempotency,
    TestRetries,
    test_deregister_returns_held_jobs,
    test_events_carry_ordered_per_job_sequence_numbers,
    test_finished_jobs_get_the_retention_ttl,
    test_release_puts_the_job_back_without_penalty_in_its_place,
)
from tests.integration.test_broker_matching import (
    TestCustomerIsolation,
    test_a_paused_worker_claims_nothing_until_resumed,
    test_each_dimension_positive_and_negative,
    test_multi_service_worker_takes_the_best_job_across_services,
    test_service_type_must_be_offered,
)
from tests.integration.test_broker_ordering import (
    test_a_batch_reports_each_job_as_submit_would,
    test_effective_priority_can_exceed_the_requested_range,
    test_order_holds_across_requirement_classes,
    test_priority_first_then_fifo_even_within_one_millisecond,
    test_queue_position,
    test_reprioritize_moves_a_job_and_keeps_fifo,
)
from tests.integration.test_scheduling_affinity import (
    test_a_passed_over_job_is_taken_once_its_bound_ran_out,
    test_a_worker_takes_the_jobs_warm_on_it_first,
)
from tests.integration.test_scheduling_fair import (
    test_a_lease_given_back_is_charged_too,
    test_a_waiting_customer_goes_before_a_burst_that_used_the_gpus,
)


@pytest.fixture
def redis(cluster_redis: RedisClient) -> RedisClient:
    return cluster_redis


@pytest.fixture
def broker_settings(broker_settings: BrokerSettings, cluster_prefix: str) -> BrokerSettings:
    """The suite's settings in this test's own slot: the scheduling tests build their brokers
    from them."""
    return dataclasses.replace(broker_settings, prefix=cluster_prefix)


@pytest.fixture
def broker(redis: RedisClient, broker_settings: BrokerSettings, cluster_prefix: str) -> Broker:
    return Broker(redis, dataclasses.replace(broker_settings, prefix=cluster_prefix))


@pytest.fixture
def fast(redis: RedisClient, cluster_prefix: str) -> Broker:
    return Broker(redis, dataclasses.replace(SHORT_LEASE, prefix=cluster_prefix))
