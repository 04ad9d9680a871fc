"""The simulated fleet: which cards, which services, which models each worker can load.

A mix of 24, 48 and 80 GB cards (`CARDS`). Each worker serves two of the three services
(the one it skips rotates with its index, so model sets differ between workers of one size
and any three workers of a size cover every service) and can
load every model of those services that fits its card with room for the largest context.
It starts with one of its most popular models warm, the same one in every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.fleet.trace import KV_GB_LARGE, MODELS, SERVICES, TraceJob, unit

# (name, memory GB, share of the fleet)
CARDS: tuple[tuple[str, float, float], ...] = (
    ("RTX 4090", 24.0, 0.55),
    ("L40S", 48.0, 0.30),
    ("H100", 80.0, 0.15),
)


@dataclass(frozen=True)
class CardSpec:
    worker_id: str
    card: str
    memory_gb: float
    services: tuple[str, ...]
    models: tuple[str, ...]  # loadable, by popularity
    warm: tuple[str, ...]  # warm at the start

    def capabilities(self, warm_models: list[str]) -> dict[str, object]:
        """The capability document a worker with this card claims with."""
        return {
            "services": list(self.services),
            "hardware": {"gpus": [{"memory_gb": self.memory_gb, "name": self.card}]},
            "models": list(self.models),
            "warm_models": warm_models,
        }


def _card(index: int, count: int) -> tuple[str, float]:
    edge = 0.0
    for name, memory, share in CARDS:
        edge += share
        if index < round(edge * count):
            return name, memory
    return CARDS[-1][0], CARDS[-1][1]


def build_fleet(count: int) -> list[CardSpec]:
    fleet = []
    for index in range(count):
        card, memory = _card(index, count)
        skipped = SERVICES[index % len(SERVICES)]
        services = tuple(s for s in SERVICES if s != skipped)
        models = tuple(
            m.name for m in MODELS if m.service in services and m.size_gb + KV_GB_LARGE <= memory
        )
        first = models[int(unit(index, "fleet-warm") * min(3, len(models)))]
        fleet.append(CardSpec(f"sim-{index:03d}", card, memory, services, models, (first,)))
    return fleet


def can_run(worker: CardSpec, job: TraceJob) -> bool:
    """What the broker's matcher will check: the service, the model, the memory."""
    return (
        job.service in worker.services
        and job.model in worker.models
        and job.memory_gb <= worker.memory_gb
    )


def unrunnable(fleet: list[CardSpec], jobs: list[TraceJob]) -> list[TraceJob]:
    """The jobs no worker of `fleet` can run (they would wait forever)."""
    return [j for j in jobs if not any(can_run(w, j) for w in fleet)]


def describe_fleet(fleet: list[CardSpec]) -> str:
    counts = {name: sum(1 for w in fleet if w.card == name) for name, _, _ in CARDS}
    cards = ", ".join(f"{n} x {name} ({mem:g} GB)" for name, mem, _ in CARDS if (n := counts[name]))
    return (
        f"fleet: {len(fleet)} simulated workers: {cards}; each serves 2 of the "
        f"{len(SERVICES)} services and can load those services' models that fit its card"
    )
