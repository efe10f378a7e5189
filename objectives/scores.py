"""Objectives and their directions, in one place; Pareto dominance; MnasNet's scalarised score.

Pure Python (no torch), so studies, Pareto analysis and the device side can all import it.
Units as stored in a study: accuracy is a fraction in [0, 1] (top-1), MACs in millions,
latency in milliseconds, parameters in millions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    """One objective: its study name, Optuna direction, unit and a plot/table label."""

    name: str
    direction: str
    unit: str
    label: str

    def better(self, a: float, b: float) -> bool:
        """True when `a` is strictly better than `b` in this objective's direction."""
        return a > b if self.direction == "maximize" else a < b


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", "maximize", "top-1", "Top-1 accuracy (fraction)"),
        Objective("mmacs", "minimize", "MMACs", "MMACs (MFLOPs as in the paper)"),
        Objective("latency_ms", "minimize", "ms", "Latency (ms, median)"),
        Objective("params", "minimize", "Mparams", "Parameters (millions)"),
        Objective("score", "maximize", "", "Scalarised score acc*(lat/T)^w"),
        # zero-cost ranking signal (Mellor et al. 2021): no training; see README "Proxy fidelity"
        Objective("naswot", "maximize", "log-det", "NASWOT score at initialisation (no training)"),
        # zero-cost scores from objectives.zero_cost (Li et al. 2023; Jiang et al. 2023): one batch, no training
        Objective("zico", "maximize", "", "ZiCo score at initialisation (no training)"),
        Objective("meco", "maximize", "", "MeCo score at initialisation (no training)"),
        # one-shot: the path's top-1 with weights inherited from a trained supernet (objectives/oneshot.py)
        Objective("oneshot_accuracy", "maximize", "top-1", "One-shot accuracy (supernet weights, BN re-estimated)"),
    )
}

#: Objectives scored on the untrained network (objectives.zero_cost), no training needed.
ZERO_COST_OBJECTIVES: tuple[str, ...] = ("naswot", "zico", "meco")


def validate_objectives(names: Iterable[str]) -> list[str]:
    """The names as a list, or ValueError naming the rule and the known objectives."""
    if isinstance(names, str):  # a bare string would iterate by character
        names = [names]
    out = list(names)
    if not out:
        raise ValueError(f"objectives must name at least one of: {', '.join(OBJECTIVES)}")
    unknown = [n for n in out if n not in OBJECTIVES]
    if unknown:
        raise ValueError(f"objectives: unknown {unknown}; known: {', '.join(OBJECTIVES)}")
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ValueError(f"objectives: each objective may appear once, got duplicates {dupes} in {out}")
    return out


def directions(names: Iterable[str]) -> list[str]:
    """Optuna directions ("maximize"/"minimize") for the objective names, in order."""
    return [OBJECTIVES[n].direction for n in validate_objectives(names)]


def scalarized(
    accuracy: float,
    latency_ms: float,
    target_ms: float,
    w: float = -0.07,
    *,
    beta: float | None = None,
) -> float:
    """MnasNet's reward `acc * (lat / T) ** w` (Tan et al. 2019, Eq. 2).

    With `w < 0` (the paper's soft constraint, w = -0.07) a model twice as slow as the
    target loses about 5% of its score, one twice as fast gains about 5%. The paper's
    hard-constraint variant uses different exponents on each side of the target:
    `w = alpha if lat <= T else beta`; pass `w=alpha, beta=beta`, e.g. `w=0.0, beta=-1.0`
    leaves fast models at their accuracy and penalises slow ones sharply.
    """
    for name, v in (("latency_ms", latency_ms), ("target_ms", target_ms)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"scalarized: {name} must be a finite number > 0, got {v!r}")
    if not math.isfinite(accuracy):
        raise ValueError(f"scalarized: accuracy must be finite, got {accuracy!r}")
    exponent = w if beta is None or latency_ms <= target_ms else beta
    return float(accuracy) * (latency_ms / target_ms) ** exponent


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Pareto dominance: `a` is no worse than `b` in every objective and better in one."""
    if not len(a) == len(b) == len(directions):
        raise ValueError(
            f"dominates: a, b and directions must have equal lengths, got {len(a)}, {len(b)}, {len(directions)}"
        )
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"dominates: directions must be 'maximize' or 'minimize', got {bad}")
    if any(math.isnan(v) for v in (*a, *b)):
        return False  # an unmeasured objective never dominates nor is dominated
    strictly = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            strictly = True
    return strictly
