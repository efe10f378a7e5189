"""Pareto set, hypervolume and knee of a study: compute first, draw second.

`pareto_info()` returns a `ParetoInfo` that the table, the plots and the exporter only
read. Non-domination and hypervolume come from moocore (a maintained library).

Hypervolume reference point (`reference_point`), per objective:
- accuracy (maximised): 0, the worst possible accuracy;
- mmacs: the budget's `max_mmacs` when the study has one (every feasible trial is below it);
- latency_ms: the budget's `max_latency_ms` when the study has one;
- anything else: the worst observed value plus 10% of the observed range (1e-9 if flat),
  so that the extreme points of the front still add volume.
Fixed, budget-based points make hypervolumes comparable between studies of the same
experiment (e.g. samplers in bench/search_quality.py); pass `ref_point` to force one.

Knee (`knee_point`): objectives normalised to [0, 1] over the front (1 = best), the point
closest (Euclidean) to the ideal point (1, ..., 1). Chosen over the "maximum distance to
the extreme-points hyperplane" rule because it is defined for fronts of one or two points
and for any number of objectives, and does not depend on which extreme points exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.scores import dominates as dominates  # re-exported: one dominance rule everywhere

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ParetoInfo:
    """Everything a renderer needs; renderers draw, they do not compute."""

    study: str
    objectives: list[str]
    directions: list[str]
    units: dict[str, str]
    labels: dict[str, str]
    trials: pd.DataFrame  # all trials (trials_frame)
    feasible: pd.DataFrame  # COMPLETE search trials with finite objectives (no presets)
    front: pd.DataFrame  # non-dominated subset of `feasible`, sorted by the first objective
    references: pd.DataFrame  # COMPLETE trials that evaluate a paper preset
    ref_point: list[float]
    hypervolume: float
    history: pd.DataFrame  # columns number, hypervolume
    knee: int | None  # trial number
    budget: dict[str, float] = field(default_factory=dict)
    backend: str | None = None

    def checkpoints(self, n: int = 5) -> list[tuple[int, float]]:
        """A few (trial number, hypervolume) points of the history, evenly spaced."""
        h = self.history
        if h.empty:
            return []
        idx = sorted({int(round(i)) for i in np.linspace(0, len(h) - 1, min(n, len(h)))})
        return [(int(h["number"].iloc[i]), float(h["hypervolume"].iloc[i])) for i in idx]


def _maximise(directions: Sequence[str]) -> list[bool]:
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if bad:
        raise ValueError(f"directions must be 'maximize' or 'minimize', got {bad}")
    return [d == "maximize" for d in directions]


def _points(df: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    return df[list(objectives)].to_numpy(dtype=float).reshape(len(df), len(objectives))


def feasible_trials(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """COMPLETE trials of the search itself (reference presets excluded), finite values."""
    missing = [o for o in objectives if o not in df.columns]
    if missing:
        raise ValueError(f"objectives {missing} are not columns of the trials frame")
    ok = df["state"] == "COMPLETE"
    if "reference_preset" in df.columns:
        ok &= df["reference_preset"].isna()
    sub = df[ok]
    finite = np.isfinite(_points(sub, objectives)).all(axis=1) if len(sub) else np.zeros(0, bool)
    return sub[finite]


def reference_trials(df: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    if "reference_preset" not in df.columns:
        return df.iloc[0:0]
    sub = df[(df["state"] == "COMPLETE") & df["reference_preset"].notna()]
    finite = np.isfinite(_points(sub, objectives)).all(axis=1) if len(sub) else np.zeros(0, bool)
    return sub[finite]


def pareto_front(df: pd.DataFrame, objectives: Sequence[str], directions: Sequence[str]) -> pd.DataFrame:
    """Non-dominated COMPLETE search trials (duplicates of a front point are all kept)."""
    import moocore

    sub = feasible_trials(df, objectives)
    if sub.empty:
        return sub
    mask = moocore.is_nondominated(_points(sub, objectives), maximise=_maximise(directions), keep_weakly=True)
    return sub[mask].sort_values([objectives[0], "number"]).copy()


def hypervolume(points: Any, directions: Sequence[str], ref_point: Sequence[float]) -> float:
    """Volume dominated by `points` and bounded by `ref_point` (0 when none beats it)."""
    import moocore

    pts = np.asarray(points, dtype=float).reshape(-1, len(directions))
    if len(ref_point) != len(directions):
        raise ValueError(f"ref_point needs {len(directions)} values, got {list(ref_point)}")
    if len(pts) == 0:
        return 0.0
    maxi = np.array(_maximise(directions))
    ref = np.asarray(ref_point, dtype=float)
    # moocore counts only points strictly better than the reference in every objective
    better = np.where(maxi, pts > ref, pts < ref).all(axis=1)
    if not better.any():
        return 0.0
    return float(moocore.hypervolume(pts[better], ref=ref, maximise=maxi.tolist()))


def reference_point(
    df: pd.DataFrame,
    objectives: Sequence[str],
    directions: Sequence[str],
    budget: dict[str, float] | None = None,
) -> list[float]:
    """The documented rule (module docstring): budget or 0 where known, else worst + 10% range."""
    budget = budget or {}
    maxi = _maximise(directions)
    pts = _points(feasible_trials(df, objectives), objectives)
    refs = _points(reference_trials(df, objectives), objectives)
    allpts = np.vstack([pts, refs]) if len(refs) else pts
    ref: list[float] = []
    for j, (name, mx) in enumerate(zip(objectives, maxi, strict=False)):
        if name == "accuracy" and mx:
            ref.append(0.0)
            continue
        if name == "mmacs" and not mx and "max_mmacs" in budget:
            ref.append(float(budget["max_mmacs"]))
            continue
        if name == "latency_ms" and not mx and "max_latency_ms" in budget:
            ref.append(float(budget["max_latency_ms"]))
            continue
        col = allpts[:, j] if len(allpts) else np.zeros(0)
        if len(col) == 0:
            ref.append(0.0)
            continue
        lo, hi = float(col.min()), float(col.max())
        pad = 0.1 * (hi - lo) or max(1e-9, 0.1 * abs(hi))
        ref.append(lo - pad if mx else hi + pad)
    return ref


def hypervolume_history(
    df: pd.DataFrame,
    objectives: Sequence[str],
    directions: Sequence[str],
    ref_point: Sequence[float],
) -> pd.DataFrame:
    """Hypervolume of the COMPLETE search trials numbered <= n, for each such n."""
    import pandas as pd

    sub = feasible_trials(df, objectives).sort_values("number")
    pts = _points(sub, objectives)
    numbers = sub["number"].to_list()
    hv: list[float] = []
    last = -1.0
    maxi = np.array(_maximise(directions))
    best: np.ndarray = np.zeros((0, len(objectives)))
    for i in range(len(sub)):
        p = pts[i : i + 1]
        # only a point that is not dominated by the current front can change the volume
        if len(best) and np.where(maxi, best >= p, best <= p).all(axis=1).any():
            hv.append(last)
            continue
        best = np.vstack([best, p])
        last = hypervolume(best, directions, ref_point)
        hv.append(last)
    return pd.DataFrame({"number": numbers, "hypervolume": hv})


def knee_point(front: pd.DataFrame, objectives: Sequence[str], directions: Sequence[str]) -> int | None:
    """Trial number of the front point closest to the ideal point after [0, 1] scaling."""
    if front.empty:
        return None
    pts = _points(front, objectives)
    maxi = np.array(_maximise(directions))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    good = np.where(maxi, (pts - lo) / span, (hi - pts) / span)  # 1 = best on the front
    dist = np.sqrt(((1.0 - good) ** 2).sum(axis=1))
    numbers = front["number"].to_numpy()
    order = np.lexsort((numbers, dist))  # ties: lowest trial number
    return int(numbers[order[0]])


def pareto_info(
    df: pd.DataFrame,
    objectives: Sequence[str] | None = None,
    *,
    ref_point: Sequence[float] | None = None,
) -> ParetoInfo:
    """Front, hypervolume (and its history) and knee of a trials frame (`nas.analysis.frame.trials_frame`)."""
    from nas.analysis.frame import DIRECTIONS, labels

    all_obj: list[str] = list(df.attrs.get("objectives", []))
    all_dir: list[str] = list(df.attrs.get("directions", []))
    objectives = list(objectives or all_obj)
    if not objectives:
        raise ValueError("no objectives: the study records no metric names; pass objectives")
    known = dict(zip(all_obj, all_dir, strict=False))
    complete = df[df["state"] == "COMPLETE"] if "state" in df.columns else df
    unknown = [
        o for o in objectives  # the study's own objectives are known even before any trial completes
        if o not in df.columns or (o not in known and (o not in DIRECTIONS or complete[o].notna().sum() == 0))
    ]
    if unknown:
        choices = sorted({*all_obj, *(k for k in DIRECTIONS if k in df.columns and complete[k].notna().any())})
        raise ValueError(f"unknown objective(s) {unknown}; this study has {choices}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives must not repeat, got {objectives}")
    directions = [known.get(o, DIRECTIONS.get(o, "minimize")) for o in objectives]
    budget = dict(df.attrs.get("budget", {}))
    ref = list(ref_point) if ref_point is not None else reference_point(df, objectives, directions, budget)
    front = pareto_front(df, objectives, directions)
    hist = hypervolume_history(df, objectives, directions, ref)
    hv = hypervolume(_points(front, objectives), directions, ref) if len(front) else 0.0
    units = dict(df.attrs.get("units", {}))
    return ParetoInfo(
        study=str(df.attrs.get("study", "")),
        objectives=objectives,
        directions=directions,
        units={o: units.get(o, "") for o in objectives},
        labels=labels(objectives),
        trials=df,
        feasible=feasible_trials(df, objectives),
        front=front,
        references=reference_trials(df, objectives),
        ref_point=ref,
        hypervolume=hv,
        history=hist,
        knee=knee_point(front, objectives, directions),
        budget=budget,
        backend=df.attrs.get("backend"),
    )
