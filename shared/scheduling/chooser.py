"""The scheduling rule: which of the matching jobs a claim takes (the specification;
shared/lua/include/choose.lua is the same rule inside the claim, and
tests/integration/test_choose_agreement.py holds the two equal).

The claim gathers candidates (include/find_job.lua): one per matching requirement class,
ranked by its head job's score, as far down the class indexes as AFFINITY_PRIORITY_WINDOW
points below the best one's effective priority (and at most `scheduling_scan_classes`
classes beyond those strict order reads); the chosen class then gives its first job. The
rule applies, lexicographically:

1. Bounds first. A candidate that a bounded policy (affinity, fit) passed over carries a
   deadline, `held_until`: the first time it was passed over (when strict order would have
   given it out) plus the policy's bound (AFFINITY_MAX_DELAY_SECONDS,
   FIT_MAX_DELAY_SECONDS; the smaller when both held it). Once now >= held_until it is
   overdue: the overdue candidates are taken first, in strict order, whatever the policies.
2. Fit (`fit`): candidates that an idle worker smaller than this one can run are left to
   it (the claim wakes that worker). When that leaves nothing, this worker takes nothing:
   every candidate is held by fit, the claim answers 'empty' with the strict-order best's
   deadline as the time to look again (so the worker blocks instead of spinning), and the
   woken smaller worker claims the job; if it does not, rule 1 gives the job to whoever
   claims once the bound has run out. A job no smaller idle worker can run (it needs this
   worker's GPU memory, a model or a compliance tag only it has) is never held back, so a
   big worker ends up preferring the jobs only it can run (shared/scheduling/fit.py).
3. Affinity (`affinity`): if some remaining candidates are warm on this worker (at least
   one model, and every one of its models in the worker's `warm_models`), only those
   remain.
4. Fair share (`fair`): only the candidates of the customer with the lowest load (decayed
   GPU-seconds / weight, shared/scheduling/usage.py) remain; a tie goes to the customer
   whose best candidate ranks first. The band fair share decides within is the window: all
   candidates are within AFFINITY_PRIORITY_WINDOW points of the best (aging moves waiting
   jobs' priorities apart by a few points, so "the same priority" would split one band).
   After affinity: fair share first left affinity only the lightest customer's few
   candidates, rarely warm (the fleet replay, docs/ARCHITECTURE.md#scheduling-policies).
5. Strict order: the remaining candidate with the lowest score (highest priority, oldest).

A candidate removed at step 2, 3 or 4 was passed over by that policy (`held`); the claim
records it on the strict-order best only (O(1) per claim; the next one becomes the
strict-order best once that is taken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.scheduling.policies import AFFINITY, FAIR, FIT


@dataclass(frozen=True, slots=True)
class Candidate:
    """One matching class's next job, as the claim sees it.

    score: the queue score (lower first). priority: its effective priority. warm: its
    models are all warm on the claiming worker (and it has some). fit_blocker: an idle
    smaller worker that can run it (fit on), else None. held_until: the deadline a bounded
    policy set when it passed the job over (ms), else None."""

    job: str
    score: int
    priority: int
    customer: str = ""
    warm: bool = False
    fit_blocker: str | None = None
    held_until: int | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """policies: those on. window: AFFINITY_PRIORITY_WINDOW. loads: customer -> usage /
    weight (fair share; a customer absent has none)."""

    policies: frozenset[str]
    window: int
    now_ms: int
    loads: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Choice:
    """chosen: the candidate to take. held: job id -> the policy that passed it over.
    overdue: the choice was forced by a bound (rule 1). nothing_taken: fit left every
    candidate to smaller idle workers (rule 2): the claim takes nothing, and `chosen` is the
    strict-order best, on which it records the bound."""

    chosen: Candidate
    held: dict[str, str]
    overdue: bool = False
    nothing_taken: bool = False


def strict_best(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate strict order takes: the lowest score (the first of equals)."""
    best = candidates[0]
    for c in candidates[1:]:
        if c.score < best.score:
            best = c
    return best


def warm(models: Sequence[str], warm_models: Sequence[str] | set[str]) -> bool:
    """A job is warm on a worker when it has at least one model and all are loaded there."""
    loaded = set(warm_models)
    return bool(models) and all(m in loaded for m in models)


def choose(candidates: Sequence[Candidate], context: Context) -> Choice | None:
    """The rule above; None when there is no candidate."""
    if not candidates:
        return None
    top = strict_best(candidates)
    band = [c for c in candidates if c.priority >= top.priority - context.window]
    overdue = [c for c in band if c.held_until is not None and context.now_ms >= c.held_until]
    if overdue:
        return Choice(strict_best(overdue), {}, overdue=True)

    held: dict[str, str] = {}
    pool = band

    def keep(policy: str, kept: list[Candidate]) -> None:
        nonlocal pool
        if not kept or len(kept) == len(pool):
            return
        ids = {c.job for c in kept}
        held.update((c.job, policy) for c in pool if c.job not in ids)
        pool = kept

    if FIT in context.policies:
        if all(c.fit_blocker is not None for c in pool):
            return Choice(strict_best(pool), {c.job: FIT for c in pool}, nothing_taken=True)
        keep(FIT, [c for c in pool if c.fit_blocker is None])
    if AFFINITY in context.policies:
        keep(AFFINITY, [c for c in pool if c.warm])
    if FAIR in context.policies:
        keep(FAIR, _lightest_customer(pool, context.loads))
    return Choice(strict_best(pool), held)


def _lightest_customer(pool: list[Candidate], loads: Mapping[str, float]) -> list[Candidate]:
    """The candidates of the customer with the lowest load; on a tie, of the customer whose
    best candidate ranks first (the first of equal scores)."""
    first = pool[0]
    for c in pool[1:]:
        load, first_load = loads.get(c.customer, 0.0), loads.get(first.customer, 0.0)
        if load < first_load or (load == first_load and c.score < first.score):
            first = c
    return [c for c in pool if c.customer == first.customer]
