"""A trailing newline passes no validated string (security issue item 5).

Python's `$` also matches just before a final newline, so `^...$` patterns let `"id\n"`
through: `{"id": "nl-test\n"}` wrote the job, then the answer failed ("Invalid HTTP header
value" in its Location) and the connection dropped: a write followed by no answer. The
one test below tries a trailing newline in every validated string field a client controls,
and checks the refusal names the field and nothing reaches Redis.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from shared.settings import BrokerSettings
from shared.text import as_text
from tests.hub_support import (
    CLIENT,
    CLIENT_TOKEN,
    hub_client,
    hub_settings,
    recv_json,
    running_hub,
    ws_connect,
)

NL = "x\n"
JOB: dict[str, Any] = {"service_type": "comfyui"}


def body(**fields: Any) -> dict[str, Any]:
    return {**JOB, **fields}


# (case, how it is sent, what is sent, the field the refusal must name)
CASES = [
    ("id", "POST /jobs", body(id="nl-test\n"), "id"),
    ("customer_id", "POST /jobs", body(customer_id="acme\n"), "customer_id"),
    ("service_type", "POST /jobs", {"service_type": "comfyui\n"}, "service_type"),
    ("tags", "POST /jobs", body(tags=["ok", NL]), "tags[1]"),
    ("models", "POST /jobs", body(requirements={"models": [NL]}), "requirements.models[0]"),
    (
        "gpu model",
        "POST /jobs",
        body(requirements={"hardware": {"gpu": {"model": "H100\n"}}}),
        "requirements.hardware.gpu.model",
    ),
    (
        "compute capability",
        "POST /jobs",
        body(requirements={"hardware": {"gpu": {"compute_capability": "8.0\n"}}}),
        "requirements.hardware.gpu.compute_capability",
    ),
    (
        "quality",
        "POST /jobs",
        body(requirements={"performance": {"quality": NL}}),
        "requirements.performance.quality",
    ),
    (
        "region",
        "POST /jobs",
        body(requirements={"geographic": {"region": "eu\n"}}),
        "requirements.geographic.region",
    ),
    (
        "compliance",
        "POST /jobs",
        body(requirements={"geographic": {"compliance": ["gdpr\n"]}}),
        "requirements.geographic.compliance[0]",
    ),
    ("batch id", "POST /jobs/batch", {"jobs": [JOB, body(id="nl-test\n")]}, "jobs[1].id"),
    ("list service_type", "GET /jobs", {"service_type": "comfyui\n"}, "service_type"),
    ("list customer_id", "GET /jobs", {"customer_id": "acme\n"}, "customer_id"),
    ("legacy connection id", "legacy connect", "c1\n", "connection id"),
    ("legacy message_id", "legacy submit", {"message_id": "m-1\n"}, "message_id"),
    ("legacy job_type", "legacy submit", {"job_type": "comfyui\n"}, "job_type"),
]


async def state(redis: Redis) -> dict[str, bytes | None]:
    return {as_text(key): await redis.dump(key) for key in await redis.keys("*")}


@pytest.mark.parametrize(
    ("how", "sent", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_a_trailing_newline_is_refused_in_every_validated_string(
    redis_url: str, redis: Redis, how: str, sent: Any, field: str
) -> None:
    """Attack: one trailing newline in a validated string (`{"id": "nl-test\\n"}`). Refused:
    400 naming the field (an `error` on the legacy socket; a legacy `message_id` that is
    not a valid id is stored escaped and shown as sent, as documented); nothing with a newline
    is written, and every request gets its answer."""
    settings = hub_settings(redis_url, BrokerSettings())
    if how.startswith(("POST", "GET")):
        method, path = how.split()
        async with hub_client(settings) as api:
            before = await state(redis)  # once the hub has started (it publishes its policy)
            if method == "GET":
                response = await api.get(path, params=sent, headers=CLIENT)
            else:
                response = await api.post(path, json=sent, headers=CLIENT)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
        assert await state(redis) == before
        return
    async with running_hub(settings) as hub:
        before = await state(redis)
        if how == "legacy connect":
            url = f"{hub.ws_url}/ws/client/{sent.replace(chr(10), '%0A')}?token={CLIENT_TOKEN}"
            async with ws_connect(url) as ws:
                reply = await recv_json(ws)
            assert reply["type"] == "error"
            assert field in reply["error"]
            assert await state(redis) == before
            return
        async with ws_connect(f"{hub.ws_url}/ws/client/c1?token={CLIENT_TOKEN}") as ws:
            await recv_json(ws)
            message = {"type": "submit_job", "job_type": "comfyui", **sent}
            await ws.send(orjson.dumps(message).decode())
            reply = await recv_json(ws)
    if field == "message_id":
        # Kept as the client's id (shown as sent), stored escaped (hub/legacy_ids.py).
        assert reply["type"] == "job_accepted", reply
        assert reply["job_id"] == sent["message_id"]
    else:
        assert reply["type"] == "error", reply
        assert field in reply["error"]
    assert not [k for k in await redis.keys("*") if b"\n" in k]
    for key in await redis.keys("job:*"):
        assert "\n" not in as_text(await redis.hget(key, "id"))
