"""When a legacy monitor's `stats_broadcast` counts as changed (hub/legacy_messages.py):
the 1 s path sends only then, the 5 s path regardless."""

from __future__ import annotations

import copy
from typing import Any

from hub.legacy_messages import legacy_capabilities, stats_fingerprint


def broadcast() -> dict[str, Any]:
    return {
        "type": "stats_broadcast",
        "timestamp": 1767225600.1,
        "connections": {"clients": ["c1"], "workers": ["w1"], "monitors": ["m1"]},
        "workers": {"w1": {"status": "idle", "supported_job_types": ["comfyui"]}},
        "subscriptions": {"stats": [], "job_notifications": [], "jobs": {}},
        "system": {
            "queues": {"priority": 0, "standard": 0, "total": 0},
            "jobs": {"total": 0, "status": {}, "active_jobs": []},
            "workers": {
                "total": 1,
                "status": {"idle": 1},
                "active_workers": [{"id": "w1", "status": "idle", "last_heartbeat": 1.0}],
            },
        },
    }


def test_time_passing_is_no_change() -> None:
    later = broadcast()
    later["timestamp"] += 1
    later["system"]["workers"]["active_workers"][0]["last_heartbeat"] = 2.0
    assert stats_fingerprint(later) == stats_fingerprint(broadcast())


def test_jobs_workers_and_connections_are_changes() -> None:
    before = stats_fingerprint(broadcast())
    for path, value in [
        (("system", "queues", "total"), 1),
        (("workers", "w1", "status"), "busy"),
        (("connections", "clients"), ["c1", "c2"]),
    ]:
        changed = copy.deepcopy(broadcast())
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert stats_fingerprint(changed) != before, path


def test_capabilities_carry_the_original_supported_job_types() -> None:
    caps = legacy_capabilities({"services": ["comfyui"], "hardware": {"gpus": []}}, ["comfyui"])
    assert caps == {
        "services": ["comfyui"],
        "hardware": {"gpus": []},
        "supported_job_types": ["comfyui"],
    }
    assert legacy_capabilities(None, ["a1111"]) == {"supported_job_types": ["a1111"]}
