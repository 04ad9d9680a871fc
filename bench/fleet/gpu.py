"""The simulated GPU: its memory, the models warm in it (an LRU), and what a job costs.

A job needs its model in memory. A warm model costs nothing; a cold one is loaded first
(`COLD_LOAD_S_PER_GB` per GB of the model, about ten times a typical job) after evicting
the least recently used models until it fits. Times are trace seconds: the worker loop
sleeps them compressed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# A 14 GB model loads in 77 s of trace time: about ten times the median job (8 s). Tuned
# with the work size (trace.py) so that baseline keeps the fleet about 70% busy.
COLD_LOAD_S_PER_GB = 5.5


@dataclass(frozen=True)
class Run:
    """What running one job cost on this GPU."""

    cold: bool
    cold_load_s: float
    work_s: float
    idle_gb: float  # memory the job held but did not need: the card's size minus its need

    @property
    def busy_s(self) -> float:
        return self.cold_load_s + self.work_s


class SimulatedGpu:
    def __init__(
        self, memory_gb: float, model_sizes: Mapping[str, float], warm: Iterable[str] = ()
    ) -> None:
        self.memory_gb = memory_gb
        self._sizes = model_sizes
        self._warm: OrderedDict[str, float] = OrderedDict()  # least recently used first
        for model in warm:
            self._load(model)
        self.cold_loads = 0
        self.jobs = 0

    @property
    def warm_models(self) -> list[str]:
        """The models in memory now, most recently used first (what a worker reports)."""
        return list(reversed(self._warm))

    def _load(self, model: str) -> None:
        size = self._sizes[model]
        if size > self.memory_gb:
            raise ValueError(f"{model} ({size:g} GB) does not fit {self.memory_gb:g} GB")
        while sum(self._warm.values()) + size > self.memory_gb:
            self._warm.popitem(last=False)
        self._warm[model] = size

    def run(self, model: str, work_s: float, memory_needed_gb: float) -> Run:
        """Account one job of `model`: a cold load when it is not warm, then the work."""
        self.jobs += 1
        cold = model not in self._warm
        if cold:
            self.cold_loads += 1
            self._load(model)
        else:
            self._warm.move_to_end(model)
        return Run(
            cold=cold,
            cold_load_s=self._sizes[model] * COLD_LOAD_S_PER_GB if cold else 0.0,
            work_s=work_s,
            idle_gb=max(0.0, self.memory_gb - memory_needed_gb),
        )
