"""What the SDK puts on the wire and how it reads answers, against a scripted transport
(httpx.MockTransport): retries by status, idempotency keys, headers, settings from the
environment, and answers that are not the hub's JSON. The same behaviour against a real
hub is in tests/integration/test_sdk_*.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from emp import (
    ApiError,
    Client,
    Conflict,
    JobStatus,
    ProtocolError,
    RetryPolicy,
    ServerError,
    WaitTimeout,
)
from emp._config import Config

QUICK = RetryPolicy(attempts=3, backoff=0, max_backoff=0)
JOB = {"id": "job-1", "service_type": "simulation", "status": "active", "event_seq": 2}


class Script:
    """Answers requests in turn from a list, keeping what was sent."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], Client]]:
    clients: list[Client] = []

    def make(script: Script) -> Client:
        made = Client(
            "http://hub.test", token="t0k", retry=QUICK, transport=httpx.MockTransport(script)
        )
        clients.append(made)
        return made

    yield make
    for made in clients:
        made.close()


def unavailable() -> httpx.Response:
    return httpx.Response(
        503,
        json={"error": {"field": "", "message": "redis unavailable, try again"}},
        headers={"Retry-After": "1"},
    )


def test_reads_are_repeated_after_a_503(scripted: Callable[[Script], Client]) -> None:
    script = Script(unavailable(), httpx.Response(200, json=JOB))
    job = scripted(script).get("job-1")
    assert job.status is JobStatus.ACTIVE
    assert len(script.sent) == 2


def test_a_503_that_lasts_ends_in_server_error(scripted: Callable[[Script], Client]) -> None:
    script = Script(unavailable())
    with pytest.raises(ServerError) as failed:
        scripted(script).get("job-1")
    assert failed.value.status == 503
    assert failed.value.message == "redis unavailable, try again"
    assert len(script.sent) == QUICK.attempts


def test_a_cancel_is_not_repeated_after_a_503(scripted: Callable[[Script], Client]) -> None:
    script = Script(unavailable(), httpx.Response(200, json={"job": JOB, "was": "active"}))
    with pytest.raises(ServerError):
        scripted(script).cancel("job-1")
    assert len(script.sent) == 1


def test_a_submission_repeats_with_the_same_idempotency_key(
    scripted: Callable[[Script], Client],
) -> None:
    created = {**JOB, "status": "pending"}
    script = Script(unavailable(), httpx.Response(201, json=created))
    emp = scripted(script)
    handle = emp.submit("simulation", {"steps": 1})
    emp.submit("simulation", {"steps": 1})
    first, retried, another = (r.headers["idempotency-key"] for r in script.sent)
    assert first == retried != another  # one key per call, kept across its retries
    assert handle.created
    assert handle.status is JobStatus.PENDING


def test_every_request_carries_the_token_and_names_the_sdk(
    scripted: Callable[[Script], Client],
) -> None:
    script = Script(httpx.Response(200, json=JOB))
    scripted(script).get("job-1")
    (sent,) = script.sent
    assert sent.headers["authorization"] == "Bearer t0k"
    assert sent.headers["user-agent"].startswith("emp-python/")
    assert sent.url == "http://hub.test/jobs/job-1"


def test_job_ids_cannot_reach_another_route(scripted: Callable[[Script], Client]) -> None:
    script = Script(httpx.Response(404, json={"error": {"field": "id", "message": "no such"}}))
    with pytest.raises(ApiError):
        scripted(script).cancel("../workers/w1")
    assert script.sent[0].url.raw_path == b"/jobs/..%2Fworkers%2Fw1/cancel"


def test_errors_keep_the_hubs_field_and_message(scripted: Callable[[Script], Client]) -> None:
    refusal = {"error": {"field": "status", "message": "job is completed"}}
    with pytest.raises(Conflict) as conflict:
        scripted(Script(httpx.Response(409, json=refusal))).cancel("job-1")
    assert (conflict.value.status, conflict.value.field) == (409, "status")
    assert str(conflict.value) == "409 status: job is completed"


def test_a_proxys_error_page_still_reads_as_an_api_error(
    scripted: Callable[[Script], Client],
) -> None:
    page = httpx.Response(502, text="<html>Bad Gateway</html>")
    with pytest.raises(ServerError) as failed:
        scripted(Script(page)).cancel("job-1")
    assert failed.value.status == 502
    assert "Bad Gateway" in failed.value.message


def test_a_success_that_is_not_json_is_a_protocol_error(
    scripted: Callable[[Script], Client],
) -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        scripted(Script(httpx.Response(200, text="hello"))).get("job-1")


def test_wait_with_no_time_left_polls_once_then_gives_up(
    scripted: Callable[[Script], Client],
) -> None:
    script = Script(httpx.Response(200, json=JOB))
    with pytest.raises(WaitTimeout) as timed_out:
        scripted(script).wait("job-1", timeout=0)
    assert timed_out.value.job is not None
    assert timed_out.value.job.status is JobStatus.ACTIVE
    assert len(script.sent) == 1


def test_the_hub_and_token_come_from_the_environment_unless_given() -> None:
    env = {"EMP_HUB_URL": "https://hub.example/emp/", "EMP_TOKEN": "from-env"}
    config = Config.resolve(None, None, 10, None, env)
    assert config.url == "https://hub.example/emp"
    assert config.token == "from-env"
    assert config.ws_url == "wss://hub.example/emp/ws"
    given = Config.resolve("http://other:3001", "mine", 10, None, env)
    assert (given.url, given.token, given.ws_url) == (
        "http://other:3001",
        "mine",
        "ws://other:3001/ws",
    )
    assert Config.resolve(None, None, 10, None, {}).url == "http://localhost:3001"
    with pytest.raises(ValueError, match="http:// or https://"):
        Config.resolve("hub:3001", None, 10, None, {})


def test_a_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.1, max_backoff=3)
    assert policy.delay(1, retry_after=2) >= 2
    assert policy.delay(1, retry_after=60) <= 3
    assert all(0 <= policy.delay(n) <= min(3, 0.1 * 2 ** (n - 1)) for n in range(1, 10))
