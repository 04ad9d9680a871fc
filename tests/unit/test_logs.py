"""Log lines, the hub's and the worker's alike: request and job ids attached, credentials
masked (shared/logs.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from shared.logs import JsonFormatter, TextFormatter, job_context, request_id_var
from worker.cli import configure_logging as configure_worker_logging
from worker.settings import WorkerSettings


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("hub.test", logging.INFO, __file__, 1, msg, None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_line_has_ids_and_extras() -> None:
    token = request_id_var.set("req-1")
    try:
        with job_context("job-9"):
            line = orjson.loads(JsonFormatter().format(record("claimed", worker_id="w1")))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "claimed"
    assert line["level"] == "info"
    assert line["request_id"] == "req-1"
    assert line["job_id"] == "job-9"
    assert line["worker_id"] == "w1"
    assert line["ts"].endswith("+00:00")


def test_text_layouts_put_the_ids_where_each_process_always_had_them() -> None:
    with job_context("job-9"):
        compact = TextFormatter().format(record("claimed"))
        dated = TextFormatter("dated").format(record("claimed"))
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    hub\.test \[job=job-9\] claimed", compact)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    hub\.test: claimed \[job_id=job-9\]", dated
    )


def test_credentials_are_masked() -> None:
    line = JsonFormatter().format(record("GET /jobs/1/events?token=t0psecret"))
    assert "t0psecret" not in line
    text = TextFormatter().format(record("x", path="/ws?token=t0psecret"))
    assert "t0psecret" not in text


def test_unserialisable_extras_do_not_break_logging() -> None:
    class Weird:
        def __str__(self) -> str:
            raise ReferenceError("gone")

    assert "<Weird>" in JsonFormatter().format(record("x", thing=Weird()))
    assert "<Weird>" in TextFormatter().format(record("x", thing=Weird()))


# -- the worker's lines ---------------------------------------------------------------------------

SECRETS = ("hunter2", "t0psecret", "s3cret-token", "pw-in-query")
LEAKY = (
    "cannot reach redis://:hunter2@redis.internal:6379/0; sent Authorization: Bearer t0psecret "
    "and HUB_AUTH_TOKEN=s3cret-token to http://svc/run?password=pw-in-query"
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put pytest's back."""
    root, uvicorn_error = logging.getLogger(), logging.getLogger("uvicorn.error")
    handlers, level, uvicorn_level = root.handlers[:], root.level, uvicorn_error.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    uvicorn_error.setLevel(uvicorn_level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_worker_log_lines_are_masked(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The worker's own logging set-up, as `emp-worker` makes it: a Redis URL with its
    password, a bearer token and token= / password= values, in a message and in a traceback."""
    env = {"HUB_REDIS_URL": "redis://localhost:6379/0", "LOG_FORMAT": fmt}
    configure_worker_logging(WorkerSettings.from_env(env))
    log = logging.getLogger("worker.runtime")
    with job_context("job-7"):
        log.warning(LEAKY)
        try:
            raise ConnectionError(LEAKY)
        except ConnectionError:
            log.exception("claim failed")
    err = capsys.readouterr().err
    assert err.count("redis://***@redis.internal:6379/0") == 2
    assert err.count("Bearer ***") == 2
    assert err.count("HUB_AUTH_TOKEN=***") == 2
    assert err.count("password=***") == 2
    assert [secret for secret in SECRETS if secret in err] == []
    assert ("[job_id=job-7]" if fmt == "text" else '"job_id":"job-7"') in err
