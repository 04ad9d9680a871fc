"""The arrival trace and how each of its rows becomes a job.

The trace (bench/traces/README.md: source, licence, citation) gives only an arrival time and
two token counts per request. Everything else a GPU job has is derived from the row's index
with a keyed hash, so the same row is the same job in every run, on every machine:

- work size: `WORK_BASE_S + GeneratedTokens * WORK_PER_GENERATED_S + ContextTokens *
  WORK_PER_CONTEXT_S` seconds of trace time;
- model: one of `MODELS`, Zipf-popular (weight 1/rank); the model gives the service;
- GPU memory needed: the model's size plus room for the context (`KV_GB_SMALL` up to
  `KV_CONTEXT_TOKENS` tokens, else `KV_GB_LARGE`);
- priority: `PRIORITIES`, by share;
- customer: one heavy customer among `CUSTOMERS`. Inside `BURST` (trace seconds) most rows are
  the heavy customer's: its burst, during which fairness matters; outside it a few are.

Times stay in trace seconds here; bench/fleet/replay.py compresses them.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TRACE_PATH = Path(__file__).resolve().parent.parent / "traces" / "azure-llm-2023-code.csv"


@dataclass(frozen=True)
class Model:
    name: str
    service: str
    size_gb: float


# By popularity rank (1 first): the Zipf weight of rank r is 1/r.
MODELS: tuple[Model, ...] = (
    Model("code-7b", "code", 14),
    Model("chat-8b", "chat", 16),
    Model("sdxl", "image", 10),
    Model("code-3b", "code", 7),
    Model("chat-13b", "chat", 26),
    Model("flux-dev", "image", 24),
    Model("code-15b", "code", 30),
    Model("chat-3b", "chat", 7),
    Model("sd15", "image", 5),
    Model("code-34b", "code", 68),
    Model("chat-70b-int4", "chat", 40),
    Model("sd3-medium", "image", 12),
    Model("code-1b", "code", 3),
    Model("chat-1b", "chat", 3),
    Model("flux-schnell", "image", 24),
    Model("code-22b", "code", 44),
    Model("chat-32b", "chat", 64),
    Model("svd-video", "image", 20),
    Model("code-7b-ft", "code", 14),
    Model("chat-8b-ft", "chat", 16),
)
MODEL_BY_NAME = {m.name: m for m in MODELS}
SERVICES: tuple[str, ...] = ("code", "chat", "image")

WORK_BASE_S = 3.5
WORK_PER_GENERATED_S = 0.3
WORK_PER_CONTEXT_S = 0.0005
KV_CONTEXT_TOKENS = 4096
KV_GB_SMALL = 2.0
KV_GB_LARGE = 6.0

# (priority, share of rows): interactive, standard, batch.
PRIORITIES: tuple[tuple[int, float], ...] = ((80, 0.15), (50, 0.70), (20, 0.15))

CUSTOMERS = 30
HEAVY_CUSTOMER = "cust-00"  # customer_name(0)
BURST = (840.0, 960.0)  # trace seconds 14:00-16:00: the trace's busiest two minutes
HEAVY_SHARE_IN_BURST = 0.8
HEAVY_SHARE_ELSEWHERE = 0.03
# Tiers (FAIR_SHARE_WEIGHTS): the first few customers after the heavy one are premium.
PREMIUM_CUSTOMERS = 5
PREMIUM_WEIGHT = 2.0


@dataclass(frozen=True)
class TraceJob:
    """One row of the trace as the job it becomes (times in trace seconds)."""

    row: int
    arrival_s: float
    context_tokens: int
    generated_tokens: int
    work_s: float
    model: str
    service: str
    memory_gb: float
    priority: int
    customer: str

    @property
    def job_id(self) -> str:
        return f"row-{self.row}"


def unit(row: int, what: str) -> float:
    """A number in [0, 1) fixed by the row and `what` (each attribute hashes separately, so
    they are independent of each other)."""
    digest = hashlib.blake2b(f"{what}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _zipf_model(u: float) -> Model:
    weights = [1 / rank for rank in range(1, len(MODELS) + 1)]
    target = u * sum(weights)
    for model, weight in zip(MODELS, weights, strict=True):
        target -= weight
        if target < 0:
            return model
    return MODELS[-1]


def _priority(u: float) -> int:
    for priority, share in PRIORITIES:
        u -= share
        if u < 0:
            return priority
    return PRIORITIES[-1][0]


def _customer(row: int, arrival_s: float) -> str:
    heavy_share = (
        HEAVY_SHARE_IN_BURST if BURST[0] <= arrival_s < BURST[1] else HEAVY_SHARE_ELSEWHERE
    )
    if unit(row, "heavy") < heavy_share:
        return HEAVY_CUSTOMER
    return customer_name(1 + int(unit(row, "customer") * (CUSTOMERS - 1)))


def customer_name(index: int) -> str:
    return f"cust-{index:02d}"


def customer_weights() -> dict[str, float]:
    """Each customer's fair-share weight, as a hub publishes it from the customer tiers:
    premium weighs PREMIUM_WEIGHT, everyone else (the heavy customer too) 1."""
    return {
        customer_name(i): PREMIUM_WEIGHT if 1 <= i <= PREMIUM_CUSTOMERS else 1.0
        for i in range(CUSTOMERS)
    }


def map_row(row: int, arrival_s: float, context_tokens: int, generated_tokens: int) -> TraceJob:
    model = _zipf_model(unit(row, "model"))
    kv = KV_GB_SMALL if context_tokens <= KV_CONTEXT_TOKENS else KV_GB_LARGE
    return TraceJob(
        row=row,
        arrival_s=arrival_s,
        context_tokens=context_tokens,
        generated_tokens=generated_tokens,
        work_s=WORK_BASE_S
        + generated_tokens * WORK_PER_GENERATED_S
        + context_tokens * WORK_PER_CONTEXT_S,
        model=model.name,
        service=model.service,
        memory_gb=model.size_gb + kv,
        priority=_priority(unit(row, "priority")),
        customer=_customer(row, arrival_s),
    )


def load_trace(path: Path = TRACE_PATH, limit: int | None = None) -> list[TraceJob]:
    """The trace's rows as jobs, in arrival order, arrivals relative to the first; the
    first `limit` rows only when given."""
    jobs: list[TraceJob] = []
    with path.open(newline="", encoding="utf-8") as f:
        first: datetime | None = None
        for row, fields in enumerate(csv.DictReader(f)):
            if limit is not None and row >= limit:
                break
            # Seven decimal places: more than fromisoformat takes before Python 3.11.
            at = datetime.fromisoformat(fields["TIMESTAMP"][:26])
            first = first or at
            jobs.append(
                map_row(
                    row,
                    (at - first).total_seconds(),
                    int(fields["ContextTokens"]),
                    int(fields["GeneratedTokens"]),
                )
            )
    return jobs


def describe_mapping(jobs: Sequence[TraceJob]) -> list[str]:
    """What the mapping produced, for the benchmark's output: the rules and the counts."""
    span = jobs[-1].arrival_s if jobs else 0.0
    by_model: dict[str, int] = {}
    by_priority: dict[int, int] = {}
    for job in jobs:
        by_model[job.model] = by_model.get(job.model, 0) + 1
        by_priority[job.priority] = by_priority.get(job.priority, 0) + 1
    heavy = sum(1 for j in jobs if j.customer == HEAVY_CUSTOMER)
    heavy_burst = sum(
        1 for j in jobs if j.customer == HEAVY_CUSTOMER and BURST[0] <= j.arrival_s < BURST[1]
    )
    in_burst = sum(1 for j in jobs if BURST[0] <= j.arrival_s < BURST[1])
    models = ", ".join(
        f"{m.name} ({m.service}, {m.size_gb:g} GB): {by_model.get(m.name, 0)}" for m in MODELS
    )
    prios = ", ".join(f"{p}: {by_priority.get(p, 0)}" for p, _ in PRIORITIES)
    return [
        f"trace: {TRACE_PATH.name}, {len(jobs):,} rows over {span:,.0f} s (trace time)",
        f"work size: {WORK_BASE_S:g} s + {WORK_PER_GENERATED_S:g} s/generated token + "
        f"{WORK_PER_CONTEXT_S:g} s/context token (trace time)",
        f"model: Zipf (weight 1/rank) over {len(MODELS)} models by a hash of the row; rows: "
        + models,
        f"GPU memory needed: the model's size + {KV_GB_SMALL:g} GB (context <= "
        f"{KV_CONTEXT_TOKENS} tokens) or {KV_GB_LARGE:g} GB",
        "priority by a hash of the row: "
        + ", ".join(f"{p} ({share:.0%})" for p, share in PRIORITIES)
        + f"; rows: {prios}",
        f"customer: {CUSTOMERS} customers; the heavy one ({HEAVY_CUSTOMER}) has "
        f"{HEAVY_SHARE_IN_BURST:.0%} of the rows in its burst (trace s {BURST[0]:g}-"
        f"{BURST[1]:g}: {heavy_burst:,} of {in_burst:,}) and {HEAVY_SHARE_ELSEWHERE:.0%} "
        f"elsewhere ({heavy:,} rows in all); the others share the rest evenly; fair-share "
        f"weights: {customer_name(1)}..{customer_name(PREMIUM_CUSTOMERS)} premium "
        f"({PREMIUM_WEIGHT:g}), the rest 1",
    ]
