"""JSON log lines carry request and job ids; credentials are masked."""

from __future__ import annotations

import logging

import orjson

from hub.request_log import JsonFormatter, TextFormatter, job_context, redact, request_id_var


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


def test_credentials_are_masked() -> None:
    assert redact("GET /ws?token=abc123&x=1") == "GET /ws?token=***&x=1"
    assert redact("Authorization: Bearer s3cret") == "Authorization: Bearer ***"
    assert redact("bearer s3cret") == "bearer ***"
    assert redact("redis://u:password=hunter2") == "redis://u:password=***"
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
