"""What a connector's service holds loaded ("warm"), as far as the connector can tell.

Loading a checkpoint into VRAM takes seconds to tens of seconds, often longer than the job,
so the worker reports its warm models with its capabilities and a claim may prefer the jobs
that want them (README, Warm models). Services that cannot say what they hold (ComfyUI has
no such endpoint) are tracked from the jobs that ran: the models of the latest jobs first,
the oldest forgotten past a bound, like the service's own model cache.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.model_refs import model_name


class WarmModels:
    """Model names, most recently used first, at most `limit` (0: none are kept)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: dict[str, None] = {}  # least recently used first

    def used(self, names: Iterable[str]) -> None:
        """The models one job loaded: they become the most recently used, in their order
        (the first of them counts as the most recent)."""
        for value in reversed(list(names)):
            name = model_name(value)
            if name is None:
                continue
            self._names.pop(name, None)
            self._names[name] = None
        while len(self._names) > self.limit:
            del self._names[next(iter(self._names))]

    def clear(self) -> None:
        self._names.clear()

    def names(self) -> list[str]:
        """Most recently used first."""
        return list(reversed(self._names))
