"""`emp-hub` / `python -m hub`: configure, start Redis if needed, serve, stop cleanly.

One process serves HUB_PORT (REST, dashboard, /ws) and WS_PORT (the same app, for clients
configured with the seed's separate WebSocket port) with two uvicorn servers on one event
loop; only the first runs the lifespan, so there is one Redis client, one event reader and
one maintenance loop. SIGINT/SIGTERM are handled here rather than by uvicorn (which would
re-raise the signal after shutdown): both servers stop, long-lived streams are told to
finish, and the embedded Redis, if any, is stopped last so it flushes its AOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import uvicorn

from hub.app import create_app
from hub.request_log import configure_logging
from hub.settings import HubSettings
from shared import __version__
from shared.config import ConfigError, load_environment, read_env_file
from shared.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from shared.event_loop import run_loop
from shared.http_guard import TransportLimits, guarded_protocol
from shared.redis_settings import RedisSettings

log = logging.getLogger("hub.cli")
VERSION = __version__
GRACEFUL_SECONDS = 5


class HubServer(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def mask_url(url: str) -> str:
    """A Redis URL with any password replaced by ***, for banners and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def worker_url(server: EmbeddedRedis, bind: str, password: str | None) -> str:
    """The URL workers on other machines should use for the embedded Redis."""
    host = socket.gethostname() if bind in ("0.0.0.0", "::") else server.host
    auth = ":***@" if password else ""
    return f"redis://{auth}{host}:{server.port}/0"


def _config(settings: HubSettings, app: object, port: int, lifespan: str) -> uvicorn.Config:
    limits = TransportLimits(
        header_timeout=settings.header_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
    )
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=port,
        lifespan=lifespan,  # type: ignore[arg-type]
        http=guarded_protocol(limits),
        log_config=None,
        access_log=False,  # it would log ?token= query strings; the hub logs requests itself
        server_header=False,
        ws_max_size=settings.max_request_bytes,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )


def raise_file_limit(settings: HubSettings) -> None:
    """Let the process hold HUB_MAX_CONNECTIONS sockets on each port plus its own files:
    the usual soft limit (1024) would otherwise run out first, with accept() errors instead
    of the hub's 503."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    ports = 2 if settings.ws_port and settings.ws_port != settings.port else 1
    wanted = settings.max_connections * ports + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open-file limit %d is below the %d that HUB_MAX_CONNECTIONS=%d needs; "
            "raise it (ulimit -n, LimitNOFILE=) or lower HUB_MAX_CONNECTIONS",
            soft,
            wanted,
            settings.max_connections,
        )


def _bound_port(server: uvicorn.Server) -> int:
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            port: int = sock.getsockname()[1]
            return port
    return 0


async def _run(server: uvicorn.Server) -> int:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits on bind or lifespan failure
        return int(exc.code or 1)
    return 0


def banner(settings: HubSettings, redis_line: str, worker_line: str, ports: list[int]) -> str:
    shown = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    if settings.auth_enabled:
        auth = (
            f"{len(settings.client_tokens)} client token(s), "
            f"{len(settings.operator_tokens)} operator token(s)"
        )
    else:
        auth = "OFF (HUB_AUTH=off): anyone who can reach this port is an operator"
    lines = [
        f"emp-redis hub {VERSION}",
        f"  redis:      {redis_line}",
        f"  workers:    {worker_line}",
        f"  api:        http://{shown}:{ports[0]}   (listening on {settings.host}:{ports[0]})",
        f"  websocket:  ws://{shown}:{ports[0]}/ws"
        + (f"  and ws://{shown}:{ports[1]}/ws" if len(ports) > 1 else ""),
        f"  dashboard:  http://{shown}:{ports[0]}/",
        f"  docs:       http://{shown}:{ports[0]}/docs",
        f"  auth:       {auth}",
    ]
    return "\n".join(lines)


async def serve(settings: HubSettings, redis_line: str, worker_line: str) -> int:
    app = create_app(settings)
    main = HubServer(_config(settings, app, settings.port, "on"))
    extra: HubServer | None = None
    if settings.ws_port and settings.ws_port != settings.port:
        extra = HubServer(_config(settings, app, settings.ws_port, "off"))

    def stop() -> None:
        log.info("stopping")
        hub = getattr(app.state, "hub", None)
        if hub is not None:
            hub.begin_shutdown()
        for server in (main, extra):
            if server is not None:
                server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    main_task = asyncio.create_task(_run(main))
    while not main.started and not main_task.done():  # noqa: ASYNC110 - uvicorn has only a flag
        await asyncio.sleep(0.02)
    if main_task.done():
        return main_task.result() or 1
    ports = [_bound_port(main)]
    tasks = [main_task]
    if extra is not None:
        extra_task = asyncio.create_task(_run(extra))
        while not extra.started and not extra_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if extra_task.done():
            stop()
            await main_task
            return extra_task.result() or 1
        ports.append(_bound_port(extra))
        tasks.append(extra_task)
    print(banner(settings, redis_line, worker_line, ports), flush=True)
    codes = await asyncio.gather(*tasks)
    return max(codes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emp-hub", description="Run the emp-redis hub.")
    parser.add_argument(
        "--env-file", type=Path, default=Path(".env.hub"), help="settings file (default .env.hub)"
    )
    parser.add_argument("--check", action="store_true", help="validate the settings and exit")
    args = parser.parse_args(argv)
    try:
        in_file = read_env_file(args.env_file) if args.env_file.is_file() else {}
        settings = HubSettings.from_env(
            load_environment(args.env_file), checked_names=in_file.keys()
        )
    except (ConfigError, OSError) as exc:
        print(f"emp-hub: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if not settings.auth_enabled:
        log.warning("HUB_AUTH=off: the hub runs WITHOUT authentication; use only for development")
    elif not settings.operator_tokens:
        log.warning("no HUB_OPERATOR_TOKEN: workers, stats, metrics and the dashboard are refused")
    pools = settings.broker.pools
    if len(pools) > 1 or pools[0] != "default":
        # Said once at start-up: which pools this hub accepts, and where unrouted jobs go.
        log.info(
            "serving pools %s; submissions naming none go by HUB_POOL_RULES (%s), else to %s",
            ",".join(pools),
            ",".join(str(rule) for rule in settings.pool_rules) or "none",
            pools[0],
        )
    if args.check:
        print("emp-hub: configuration ok")
        return 0
    raise_file_limit(settings)
    embedded: EmbeddedRedis | None = None
    if settings.redis is not None:
        redis_url = settings.redis.url
        if settings.redis.sentinels or settings.redis.cluster or redis_url is None:
            redis_line = worker_line = settings.redis.describe()
        else:
            redis_line = mask_url(redis_url)
            worker_line = f"REDIS_URL={mask_url(redis_url)}"
    else:
        embedded = EmbeddedRedis(
            settings.data_dir,
            port=settings.embedded_redis_port,
            host=settings.embedded_redis_bind,
            password=settings.embedded_redis_password,
        )
        try:
            redis_url = embedded.start()
        except EmbeddedRedisError as exc:
            print(f"emp-hub: cannot start the embedded Redis: {exc}", file=sys.stderr)
            return 1
        redis_line = (
            f"embedded {embedded.binary.name} pid {embedded.pid} at {mask_url(redis_url)} "
            f"(data {embedded.data_dir}, AOF everysec)"
        )
        settings = dataclasses.replace(settings, redis=RedisSettings(url=redis_url))
        url = worker_url(embedded, settings.embedded_redis_bind, settings.embedded_redis_password)
        worker_line = f"REDIS_URL={url}"
        if settings.embedded_redis_bind in ("127.0.0.1", "::1", "localhost"):
            worker_line += (
                "  (loopback only: set HUB_REDIS_BIND and HUB_REDIS_PASSWORD for remote workers)"
            )
    try:
        return run_loop(serve(settings, redis_line, worker_line))
    finally:
        if embedded is not None:
            embedded.stop()
