"""Service names are case-insensitive everywhere they come in, and kept in lower case
(shared/validation.py): submissions, worker capabilities and settings, gateway grants,
pool rules."""

from __future__ import annotations

import msgspec
import pytest

from hub.pool_routing import parse_rules
from shared.capabilities import Capabilities
from shared.config import ConfigError
from shared.job import JobRequest
from shared.validation import convert
from shared.worker_grants import Grant
from worker.settings import WorkerSettings

REDIS = {"HUB_REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_a_submission_keeps_its_service_in_lower_case() -> None:
    assert convert({"service_type": "ComfyUI"}, JobRequest).service_type == "comfyui"
    assert JobRequest(service_type="A1111").service_type == "a1111"


def test_capabilities_keep_services_in_lower_case_each_once() -> None:
    caps = msgspec.json.decode(b'{"services": ["ComfyUI", "comfyui", "LLM"]}', type=Capabilities)
    assert caps.services == ["comfyui", "llm"]


def test_a_gateway_grant_keeps_services_in_lower_case() -> None:
    grant = convert({"worker_id": "g1", "services": ["ComfyUI"]}, Grant)
    assert grant.services == ["comfyui"]


def test_worker_services_setting_is_case_insensitive() -> None:
    settings = WorkerSettings.from_env({**REDIS, "SERVICES": "ComfyUI, comfyui,A1111"})
    assert settings.services == ("comfyui", "a1111")


def test_pool_rules_match_services_whatever_the_case() -> None:
    (rule,) = parse_rules("HUB_POOL_RULES", "service:LLM=llm")
    assert rule.matches(JobRequest(service_type="Llm"))


@pytest.mark.parametrize("bad", ["Comfy UI", "-comfyui", "c" * 65])
def test_names_outside_the_pattern_are_still_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        WorkerSettings.from_env({**REDIS, "SERVICES": bad})
