"""WorkerSettings.from_env: defaults, derived values, and errors that name the setting."""

from __future__ import annotations

import socket

import pytest

from shared.config import ConfigError
from worker.settings import WorkerSettings

BASE = {"HUB_REDIS_URL": "redis://127.0.0.1:6399/0", "WORKER_ID": "w1"}


def test_defaults() -> None:
    s = WorkerSettings.from_env(BASE)
    assert s.services == ("simulation",)
    assert (s.concurrent_jobs, s.customer_isolation) == (1, "none")
    assert s.quality_levels == ("fast", "balanced", "quality")
    assert (s.gpu_count, s.dashboard_port, s.operator_token) == (None, None, None)
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert s.broker.job_timeout == 30 * 60


def test_values_are_parsed_to_their_types() -> None:
    s = WorkerSettings.from_env(
        {
            **BASE,
            "SERVICES": "comfyui, a1111",
            "CONCURRENT_JOBS": "4",
            "GPU_MEMORY_GB": "79.6",
            "MODELS": "sdxl,,flux",
            "CUSTOMER_ISOLATION": "STRICT",
            "ALLOWED_CUSTOMERS": "acme",
            "WORKER_DASHBOARD_ENABLED": "off",
            "LOG_LEVEL": "debug",
            "MAX_JOB_TIMEOUT_MINUTES": "2",
        }
    )
    assert s.services == ("comfyui", "a1111")
    assert s.concurrent_jobs == 4
    assert s.gpu_memory_gb == 79.6
    assert s.models == ("sdxl", "flux")
    assert (s.customer_isolation, s.allowed_customers) == ("strict", ("acme",))
    assert s.dashboard_enabled is False
    assert s.log_level == "DEBUG"
    assert s.broker.job_timeout == 120


def test_dashboard_port_0_means_the_first_free_port() -> None:
    assert WorkerSettings.from_env({**BASE, "WORKER_DASHBOARD_PORT": "0"}).dashboard_port is None
    assert WorkerSettings.from_env({**BASE, "WORKER_DASHBOARD_PORT": "1600"}).dashboard_port == 1600


def test_worker_id_defaults_to_the_host_and_the_first_visible_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu box.example")
    values = {"HUB_REDIS_URL": BASE["HUB_REDIS_URL"], "CUDA_VISIBLE_DEVICES": "3,4"}
    assert WorkerSettings.from_env(values).worker_id == "gpu-box.example-gpu3"


def test_a_derived_worker_id_is_checked_like_a_configured_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 100)
    values = {"HUB_REDIS_URL": BASE["HUB_REDIS_URL"], "CUDA_VISIBLE_DEVICES": "GPU-" + "0" * 36}
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env(values)
    assert info.value.name == "WORKER_ID"


def test_hub_ws_url_is_not_a_worker_setting() -> None:
    """The seed's workers needed it; this one talks only to Redis, and starts with it set."""
    s = WorkerSettings.from_env({**BASE, "HUB_WS_URL": "ws://hub:3002"})
    assert not hasattr(s, "hub_ws_url")


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"WORKER_ID": "has space"}, "WORKER_ID"),
        ({"SERVICES": "comfyui,Bad Name"}, "SERVICES"),
        ({"CONCURRENT_JOBS": "many"}, "CONCURRENT_JOBS"),
        ({"CONCURRENT_JOBS": "0"}, "CONCURRENT_JOBS"),
        ({"GPU_COUNT": "257"}, "GPU_COUNT"),
        ({"GPU_MEMORY_GB": "lots"}, "GPU_MEMORY_GB"),
        ({"COST_PER_HOUR": "-1"}, "COST_PER_HOUR"),
        ({"COST_PER_HOUR": "nan"}, "COST_PER_HOUR"),
        ({"CUSTOMER_ISOLATION": "some"}, "CUSTOMER_ISOLATION"),
        ({"CUSTOMER_ISOLATION": "strict"}, "ALLOWED_CUSTOMERS"),
        ({"DENIED_CUSTOMERS": "acme"}, "DENIED_CUSTOMERS"),
        ({"WORKER_DASHBOARD_ENABLED": "maybe"}, "WORKER_DASHBOARD_ENABLED"),
        ({"WORKER_DASHBOARD_PORT": "65536"}, "WORKER_DASHBOARD_PORT"),
        ({"WORKER_SHUTDOWN_GRACE_SECONDS": "-1"}, "WORKER_SHUTDOWN_GRACE_SECONDS"),
        ({"LOG_LEVEL": "critical"}, "LOG_LEVEL"),
        ({"LEASE_TIMEOUT_SECONDS": "0.5"}, "LEASE_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_INTERVAL_SECONDS": "30"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ({"MAX_RESULT_BYTES": "1"}, "MAX_RESULT_BYTES"),
    ],
)
def test_bad_settings_name_the_setting(values: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env({**BASE, **values})
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")


def test_the_operator_token_stays_out_of_the_settings_repr() -> None:
    settings = WorkerSettings.from_env({**BASE, "HUB_OPERATOR_TOKEN": "dashboard-secret-1"})
    assert settings.operator_token == "dashboard-secret-1"
    assert "dashboard-secret-1" not in repr(settings)


# -- the worker gateway ---------------------------------------------------------------------

GATEWAY = {
    "WORKER_GATEWAY_URL": "https://hub-a:3001, https://hub-b:3001",
    "WORKER_GATEWAY_TOKEN": "egw.box-7.s3cr3t-part",
}


def test_a_gateway_worker_takes_its_id_from_the_token_and_needs_no_redis() -> None:
    s = WorkerSettings.from_env(GATEWAY)
    assert s.through_gateway
    assert s.gateway_urls == ("https://hub-a:3001", "https://hub-b:3001")
    assert s.worker_id == "box-7"
    assert "s3cr3t" not in repr(s)


@pytest.mark.parametrize("pools", ["gpu-eu", "default,gpu-eu", "gpu-eu,default"])
def test_a_gateway_worker_refuses_pools_other_than_the_default(pools: str) -> None:
    """The gateway claims in the default pool only: a gateway worker told to serve another
    pool would serve none of it, so it does not start."""
    with pytest.raises(ConfigError) as refused:
        WorkerSettings.from_env({**GATEWAY, "POOLS": pools})
    assert refused.value.name == "POOLS"
    assert "gateway" in str(refused.value)
    assert WorkerSettings.from_env({**GATEWAY, "POOLS": "default"}).broker.pools == ("default",)


def test_a_direct_worker_serves_the_pools_it_names() -> None:
    settings = WorkerSettings.from_env({**BASE, "POOLS": "gpu-eu,gpu-us"})
    assert settings.broker.pools == ("gpu-eu", "gpu-us")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"HUB_REDIS_URL": "redis://hub:6379/0"}, "WORKER_GATEWAY_URL"),
        ({"REDIS_URL": "redis://hub:6379/0"}, "WORKER_GATEWAY_URL"),
        ({"WORKER_ID": "another-box"}, "WORKER_ID"),
        ({"WORKER_GATEWAY_TOKEN": ""}, "WORKER_GATEWAY_TOKEN"),
        ({"WORKER_GATEWAY_TOKEN": "operator-token-0001"}, "WORKER_GATEWAY_TOKEN"),
        ({"WORKER_GATEWAY_URL": ""}, "WORKER_GATEWAY_URL"),
    ],
)
def test_gateway_settings_that_cannot_work_name_the_setting(
    extra: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        WorkerSettings.from_env({**GATEWAY, **extra})
    assert refused.value.name == named
