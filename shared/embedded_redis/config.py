"""The embedded server's configuration: its command line, plus the secrets fed on standard input.

Durability: AOF is on by default with ``appendfsync everysec`` (a crash loses at most ~1 s of
acknowledged writes; ``always`` loses none). RDB snapshots are off (``save ""``).

The password, when given, is fed to the server on standard input (``redis-server -``) rather than as
``--requirepass`` on the command line, so it never shows in ``ps`` output or in any log.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APPENDFSYNC_VALUES", "server_args", "stdin_config"]

APPENDFSYNC_VALUES = frozenset({"always", "everysec", "no"})


def server_args(
    binary: Path,
    *,
    port: int,
    host: str,
    data_dir: Path,
    log_path: Path,
    appendonly: bool,
    appendfsync: str,
    config_on_stdin: bool,
) -> list[str]:
    """The server's argv; ``config_on_stdin`` makes it read more config (:func:`stdin_config`)."""
    args = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        appendfsync,
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(log_path),
    ]
    if config_on_stdin:
        args.append("-")  # read more config (requirepass) from stdin, keeping it off argv
    return args


def stdin_config(password: str) -> bytes:
    """The config text to write to the server's stdin when it was started with ``-``."""
    return b"requirepass " + _config_quote(password) + b"\n"


def _config_quote(value: str) -> bytes:
    """Quote a value for the server's config syntax (sdssplitargs), escaping every odd byte."""
    out = bytearray(b'"')
    for byte in value.encode():
        if 0x20 <= byte <= 0x7E and byte not in (0x22, 0x5C):
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    out += b'"'
    return bytes(out)
