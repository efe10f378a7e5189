"""Multi-fidelity, multi-objective successive halving (asynchronous, as ASHA, with Pareto ranks).

Why our own rule: Optuna cannot prune multi-objective studies and Ray's ASHA ranks one
metric, so neither can promote "the non-dominated third" of a rung. The rule here is a pure
function of the objective vectors of the trials that finished a rung so far; a backend asks
it when a trial finishes a rung, and the trial either trains on (same model) to the next
rung or stops and is recorded PRUNED with the rung it reached. Like ASHA it never waits for
a rung to fill: a trial is promoted when it lies in the top `promote` fraction of its rung's
finished set at that moment, once the set holds at least `min_population` trials.

Order within a rung is NSGA-II's: non-dominated sorting (moocore), then crowding distance
(larger first, boundary points infinite), then trial number (earlier first) so ties are
deterministic on every backend.

Storage (study contract): the objective vector reached at rung r (1-based) lives in the
trial user attr "rung_<r>" ({objective: value}); "rung" holds the highest rung finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within one front (boundary points: inf).

    Each objective's gap is normalised by that objective's range in the front; an objective
    with no range adds nothing. Sorting is stable, so equal values keep their input order.
    """
    n = len(points)
    if n == 0:
        return []
    dist = [0.0] * n
    for m in range(len(points[0])):
        order = sorted(range(n), key=lambda i: points[i][m])
        lo, hi = points[order[0]][m], points[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for j in range(1, n - 1):
            dist[order[j]] += (points[order[j + 1]][m] - points[order[j - 1]][m]) / (hi - lo)
    return dist


def rank_trials(vectors: Mapping[int, Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Trial numbers best first: Pareto rank, then crowding distance within the rank, then number."""
    import moocore

    numbers = sorted(vectors)
    if not numbers:
        return []
    pts = [[float(x) for x in vectors[k]] for k in numbers]
    ranks = moocore.pareto_rank(pts, maximise=[d == "maximize" for d in directions]).tolist()
    crowd: dict[int, float] = {}
    for r in set(ranks):
        # identical vectors share one crowding distance, so only the trial number tells them apart
        unique = sorted({tuple(pts[i]) for i in range(len(numbers)) if ranks[i] == r})
        dist = dict(zip(unique, crowding_distance(unique), strict=True))
        for i in range(len(numbers)):
            if ranks[i] == r:
                crowd[numbers[i]] = dist[tuple(pts[i])]
    by_number = dict(zip(numbers, ranks, strict=True))
    return sorted(numbers, key=lambda k: (by_number[k], -crowd[k], k))


def promoted_count(population: int, promote: float, min_population: int) -> int:
    """How many of a rung's `population` finished trials are promoted: floor(population * promote),
    0 below `min_population` (a tiny rung says too little to promote anything)."""
    if population < min_population:
        return 0
    return math.floor(population * promote + 1e-9)


def select_promoted(vectors: Mapping[int, Sequence[float]], directions: Sequence[str], promote: float,
                    min_population: int = 1) -> list[int]:
    """The trial numbers promoted from one rung (best first). Non-finite vectors are never promoted
    but count in the population (they finished the rung)."""
    finite = {k: v for k, v in vectors.items() if all(math.isfinite(float(x)) for x in v)}
    k = promoted_count(len(vectors), promote, min_population)
    return rank_trials(finite, directions)[:k]


def promotes(number: int, vectors: Mapping[int, Sequence[float]], directions: Sequence[str], promote: float,
             min_population: int = 1) -> bool:
    """ASHA's question for one trial that just finished a rung: is it in the promoted fraction of
    the rung's finished set (`vectors`, which includes the trial itself)?"""
    if number not in vectors:
        raise ValueError(f"promotes: trial {number} is not in the rung's finished set {sorted(vectors)}")
    return number in select_promoted(vectors, directions, promote, min_population)


# ------------------------------------------------------------------------------ storage adapters

def rung_vectors(trials: Sequence[Any], rung: int, objective_names: Sequence[str]) -> dict[int, list[float]]:
    """{trial number: objective vector at `rung`} for the trials whose user attrs hold "rung_<rung>"."""
    out: dict[int, list[float]] = {}
    for t in trials:
        rec = t.user_attrs.get(f"rung_{rung}")
        if isinstance(rec, dict) and all(isinstance(rec.get(o), (int, float)) for o in objective_names):
            out[t.number] = [float(rec[o]) for o in objective_names]
    return out


def rung_population(study: optuna.Study, rung: int, objective_names: Sequence[str]) -> dict[int, list[float]]:
    """The rung's finished set as the study holds it (COMPLETE, PRUNED and RUNNING trials; a
    FAILed trial's rung results count through its retry, which copies them)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    return rung_vectors(trials, rung, objective_names)
