"""Where the command line writes: standard output, as text for a person or JSON for a
program (`--json`), with the in-place progress line only when a terminal is watching."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from emp.cli.render import json_text
from emp.events import Event, JobEvent, Snapshot, StreamGap, WorkerEvent

FALLBACK_SIZE = (120, 24)  # when the terminal does not say (columns, lines)


class Output:
    def __init__(self, json_mode: bool, stream: TextIO | None = None) -> None:
        self.json = json_mode
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._status_shown = False

    def line(self, text: str = "") -> None:
        self.end_status()
        print(text, file=self.stream, flush=True)

    def lines(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.line(text)

    def document(self, value: Any) -> None:
        """One JSON document (a job, a list, the statistics), indented."""
        self.line(json_text(value))

    def record(self, value: Any) -> None:
        """One JSON value on one line: a stream of them is NDJSON."""
        self.line(json.dumps(value, separators=(",", ":"), ensure_ascii=False))

    def status(self, text: str) -> None:
        """Rewrite the current terminal line in place (a progress bar). Clipped to the
        terminal's width: a line that wrapped could no longer be rewritten."""
        width = shutil.get_terminal_size(FALLBACK_SIZE).columns - 1
        self.stream.write("\r" + text[:width] + "\x1b[K")
        self.stream.flush()
        self._status_shown = True

    def end_status(self) -> None:
        if self._status_shown:
            self._status_shown = False
            self.stream.write("\n")
            self.stream.flush()

    def clear_screen(self) -> None:
        self.stream.write("\x1b[H\x1b[2J")


def event_json(item: Event) -> dict[str, Any]:
    """A stream item in the shapes of the hub's /ws messages."""
    if isinstance(item, Snapshot):
        return {"type": "snapshot", "job": dict(item.job.raw)}
    if isinstance(item, StreamGap):
        return {"type": "gap", "reason": item.reason}
    if isinstance(item, JobEvent | WorkerEvent):
        return {"type": "event", "event": dict(item.raw)}
    raise TypeError(f"not a stream item: {item!r}")
