"""Where a study stands: trial counts, feasible share, best of each objective, ETA.

Pure helpers over a loaded study; imported by the progress bar and `status` without the trial machinery.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.storage import DONE_STATES, is_reference, redact, remeasured, remeasured_latency


@dataclass
class Summary:
    study_name: str
    storage: str
    run_dir: str
    target: int
    counts: dict[str, int]
    done: int
    feasible_share: float | None
    best: dict[str, float]
    eta_s: float | None
    median_trial_s: float | None
    best_trial: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(study: optuna.Study, target: int | None = None, workers: int = 1) -> Summary:
    # candidates only: reference presets are comparison points beside the target, never "the best"
    trials = [t for t in study.get_trials(deepcopy=False) if not is_reference(t)]
    attrs = study.user_attrs
    exp = attrs.get("experiment", {})
    target = int(target or attrs.get("n_trials") or exp.get("search", {}).get("n_trials") or len(trials))
    counts = {**{s.name: 0 for s in TrialState}, "NOT_RUN": 0}
    for t in trials:  # "not run" (a duplicate, a surplus trial, a twin's promotion) is no failure
        not_run = t.state == TrialState.FAIL and str(t.user_attrs.get("fail_reason", "")).startswith("not run")
        counts["NOT_RUN" if not_run else t.state.name] += 1
    done = counts["COMPLETE"] + counts["PRUNED"]
    judged = [t for t in trials if t.state in DONE_STATES and "constraint" in t.user_attrs]
    feasible = [t for t in judged if all(c <= 0 for c in t.user_attrs["constraint"])]
    share = len(feasible) / len(judged) if judged else None
    names = study.metric_names or attrs.get("objectives") or []
    best: dict[str, float] = {}
    best_trial: dict[str, int] = {}  # each objective's best comes from its own trial
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    again = remeasured(study)  # the end-of-search re-measure wins, as in pareto

    def value(t: optuna.trial.FrozenTrial, i: int, name: str) -> float:
        v = remeasured_latency(again.get(str(t.number))) if name == "latency_ms" else None
        return v if v is not None else t.values[i]

    for i, (name, d) in enumerate(zip(names, study.directions, strict=False)):
        if complete:
            sign = -1 if d == optuna.study.StudyDirection.MAXIMIZE else 1
            top = min(complete, key=lambda t, i=i, name=name, sign=sign: (sign * value(t, i, name), t.number))
            best[name], best_trial[name] = value(top, i, name), top.number
    durs = [t.duration.total_seconds() for t in trials if t.state in DONE_STATES and t.duration is not None]
    med = statistics.median(durs) if durs else None
    eta = med * max(0, target - done) / max(1, workers) if med is not None else None
    return Summary(study.study_name, redact(str(study._storage.url)) if hasattr(study._storage, "url") else "",
                   exp.get("search", {}).get("run_dir") or "", target, counts, done, share, best, eta, med,
                   best_trial)


def eta_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
