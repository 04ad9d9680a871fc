"""The event loop that the hub and the worker processes run on.

uvloop where it is installed (Linux and macOS; a dependency of both, and shipped in
worker.pyz), the standard library's loop otherwise. Each awaited Redis round trip costs the
event loop a poll, a wake-up and a transport write; uvloop does those in C. Measured on the
2-core dev box: the hub's CPU per POST /jobs 527 -> 386 us (with httptools, its HTTP parser,
together); the worker's own instructions per job in a one-slot drain of no-op jobs 461k ->
402k (callgrind, user space).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop where it can be imported."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
