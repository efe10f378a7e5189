"""Multi-objective early stopping by Pareto dominance at equal epochs.

Why not the usual tools: Optuna cannot prune multi-objective studies (`trial.report` is
single-objective), and Ray's schedulers (ASHA, median stopping) rank one metric and record
a stopped trial as complete with its partial metrics, which feeds the sampler a misleading
"finished" point. Here a candidate is stopped at epoch k only when enough earlier trials,
compared at the same epoch k, are at least as good in every objective and better in one
(accuracy at epoch k plus the static MMACs / latency / params known before training).
A small, cheap model with a poor early accuracy is therefore not stopped just because big
models learn faster: it is stopped only if it is beaten on cost as well.

Storage (study contract): per-epoch accuracies live in the trial user attr "acc_history"
(list of floats, index epoch-1; "acc_epoch_<k>" attrs are read too), next to the static
objective values "mmacs", "latency_ms" and "params".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from objectives.scores import dominates

if TYPE_CHECKING:
    import optuna

DIRECTIONS = ("maximize", "minimize")
#: objective values known before training, read from trial user attrs of the same name
STATIC_OBJECTIVES = ("mmacs", "latency_ms", "params")


class DominanceStopper:
    """Stop a trial at epoch k when >= `min_dominating` of >= `min_trials` earlier trials dominate it at k.

    A pure function of its inputs, so a backend may call it anywhere (worker or driver) with
    whatever history it can read.
    """

    def __init__(self, directions: list[str], min_trials: int = 5, min_dominating: int = 3,
                 grace_epochs: int = 1) -> None:
        bad = [d for d in directions if d not in DIRECTIONS]
        if not directions or bad:
            raise ValueError(f"DominanceStopper: directions must be a non-empty list of 'maximize'/'minimize', "
                             f"got {directions!r}")
        for name, v in (("min_trials", min_trials), ("min_dominating", min_dominating),
                        ("grace_epochs", grace_epochs)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DominanceStopper: {name} must be an integer >= 1, got {v!r}")
        self.directions = list(directions)
        self.min_trials = min_trials
        self.min_dominating = min_dominating
        self.grace_epochs = grace_epochs

    def __repr__(self) -> str:
        return (f"DominanceStopper(directions={self.directions}, min_trials={self.min_trials}, "
                f"min_dominating={self.min_dominating}, grace_epochs={self.grace_epochs})")

    def count_dominating(self, values: Sequence[float], history: Iterable[Sequence[float]]) -> int:
        """How many history vectors dominate `values` (non-finite history vectors are ignored)."""
        n = len(self.directions)
        if len(values) != n:
            raise ValueError(f"DominanceStopper: values must have {n} entries (one per direction), "
                             f"got {len(values)}: {list(values)}")
        count = 0
        for i, h in enumerate(history):
            if len(h) != n:
                raise ValueError(f"DominanceStopper: history[{i}] must have {n} entries, got {len(h)}: {list(h)}")
            if all(math.isfinite(x) for x in h) and dominates(h, values, self.directions):
                count += 1
        return count

    def should_stop(self, epoch: int, values: Sequence[float], history: Sequence[Sequence[float]]) -> bool:
        """True when the candidate's vector at `epoch` is dominated by enough earlier trials at `epoch`.

        `history` holds the earlier trials' vectors at the same epoch (only trials that reached
        it). Never stops before `grace_epochs`, with fewer than `min_trials` comparable trials,
        or when the candidate's own vector is not finite (divergence is the trainer's to report).
        """
        if epoch < self.grace_epochs:
            return False
        valid = [h for h in history if all(math.isfinite(x) for x in h)]
        if len(valid) < self.min_trials:
            return False
        if not all(math.isfinite(x) for x in values):
            return False
        return self.count_dominating(values, valid) >= self.min_dominating


# ------------------------------------------------------------------------------ storage adapters

def accuracy_at(user_attrs: Mapping[str, Any], epoch: int) -> float | None:
    """Accuracy after `epoch` (1-based) from "acc_history" or "acc_epoch_<k>"; None if not reached."""
    hist = user_attrs.get("acc_history")
    if isinstance(hist, list) and len(hist) >= epoch:
        v = hist[epoch - 1]
    else:
        v = user_attrs.get(f"acc_epoch_{epoch}")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def vector_at(user_attrs: Mapping[str, Any], epoch: int, objective_names: Sequence[str],
              score: Mapping[str, float] | None = None) -> list[float] | None:
    """One trial's objective vector at `epoch` from its user attrs; None when incomplete.

    "score" needs `score` = {"target_ms": T, "w": w} (the experiment's score section).
    """
    acc = accuracy_at(user_attrs, epoch)
    if acc is None:
        return None
    out: list[float] = []
    for name in objective_names:
        if name == "accuracy":
            out.append(acc)
        elif name in STATIC_OBJECTIVES:
            # parameters are recorded as a raw count ("n_params"; "params" in older studies),
            # the objective is in millions (objectives.scores)
            v = user_attrs.get("n_params", user_attrs.get("params")) if name == "params" else user_attrs.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            out.append(float(v) / 1e6 if name == "params" else float(v))
        elif name == "score":
            lat = user_attrs.get("latency_ms")
            if score is None or not isinstance(lat, (int, float)) or not lat > 0 or not math.isfinite(acc):
                return None
            from objectives.scores import scalarized

            out.append(float(scalarized(acc, float(lat), float(score["target_ms"]), float(score.get("w", -0.07)))))
        else:
            raise ValueError(f"history: unknown objective {name!r} (known: accuracy, score, "
                             f"{', '.join(STATIC_OBJECTIVES)})")
    return out


def history_from_study(study: optuna.Study, epoch: int, objective_names: Sequence[str], *,
                       exclude_number: int | None = None) -> list[list[float]]:
    """Other trials' objective vectors at `epoch`, for `DominanceStopper.should_stop`.

    Reads COMPLETE and PRUNED trials and RUNNING ones (their per-epoch attrs are written as
    they train) that reached `epoch`; FAIL trials are left out (a crash says nothing about
    quality). `exclude_number` is the candidate's own trial number.
    """
    from optuna.trial import TrialState

    score = (study.user_attrs.get("experiment") or {}).get("score") if "score" in objective_names else None
    out: list[list[float]] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if exclude_number is not None and t.number == exclude_number:
            continue
        v = vector_at(t.user_attrs, epoch, objective_names, score)
        if v is not None:
            out.append(v)
    return out
