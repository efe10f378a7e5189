"""Read a finished (or running) study into one pandas DataFrame.

Every backend (Optuna or Ray) writes the same Optuna RDB storage (see the study contract
in DESIGN.md), so `pareto` and `export` read one format. Reading never creates a study
and never writes to the storage: SQLite files are checked for existence first and opened
read-only.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from objectives.scores import OBJECTIVES

if TYPE_CHECKING:
    import optuna
    import pandas as pd

#: name -> (unit shown on axes and headers, label), from the one table in objectives.scores.
UNITS: dict[str, tuple[str, str]] = {
    o.name: (o.unit, o.label) for o in OBJECTIVES.values()
}
DIRECTIONS: dict[str, str] = {o.name: o.direction for o in OBJECTIVES.values()}
#: per-trial user attrs copied into the frame as they are (study contract)
TRIAL_ATTRS: tuple[str, ...] = (
    "arch_id", "mmacs", "n_params", "latency_ms", "latency_p90_ms", "latency_spread", "latency_n",
    "latency_backend", "device", "accuracy", "epochs_run", "stopped_epoch", "time_macs_s", "time_latency_s",
    "time_train_s", "time_zero_cost_s", "time_eval_s", "best_accuracy", "fail_reason", "reference_preset",
    "weights", "latency_source", "latency_raw_ms", "latency_probe", "latency_flagged", "latency_reference",
)


def objective_names(study: optuna.Study) -> list[str]:
    """Metric names per the contract; falls back to the "objectives" attr, then values_i."""
    names = study.metric_names
    if names and all(names):
        return list(names)
    attr = study.user_attrs.get("objectives")
    if isinstance(attr, list) and len(attr) == len(study.directions):
        return [str(a) for a in attr]
    return [f"values_{i}" for i in range(len(study.directions))]


def study_directions(study: optuna.Study) -> list[str]:
    return ["maximize" if d.name == "MAXIMIZE" else "minimize" for d in study.directions]


def units(names: list[str]) -> dict[str, str]:
    return {n: UNITS.get(n, ("", n))[0] for n in names}


def labels(names: list[str]) -> dict[str, str]:
    return {n: UNITS.get(n, ("", n))[1] for n in names}


def budget(study: optuna.Study) -> dict[str, float]:
    """The experiment's budget ({"max_mmacs", "min_mmacs", "max_latency_ms"}; missing keys dropped)."""
    exp = study.user_attrs.get("experiment") or {}
    b = exp.get("budget") if isinstance(exp, dict) else None
    if not isinstance(b, dict):
        return {}
    return {k: float(v) for k, v in b.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _arch_fields(arch_json: str | None, space: Any = None) -> dict[str, Any]:
    """The family's summary columns, its name, and the space width that gives the arch
    (budget-aware sampling records width_q, not width)."""
    from search_spaces import ArchBase, family_of

    if not arch_json:
        return {}
    try:
        arch = ArchBase.from_json(arch_json)
    except ValueError:
        return {}
    row = {"family": arch.family, **family_of(arch).summary(arch)}
    width_of = getattr(space, "width_of", None)
    if width_of is not None:
        row["width"] = width_of(arch.with_io(in_channels=space.in_channels, num_classes=space.num_classes,
                                             small_input=space.small_input))
    return row


def _space(d: Any) -> Any:
    """The study's space (stored as its dict) or None when it cannot be rebuilt."""
    from search_spaces import get_space

    if not isinstance(d, dict) or "name" not in d:
        return None
    d = dict(d)
    try:
        return get_space(d.pop("name"), **d)
    except (TypeError, ValueError):
        return None


def _apply_remeasured(rows: list[dict[str, Any]], study: optuna.Study) -> None:
    """The end-of-search re-measure (nas.timing) replaces latency_ms; the first value stays beside it.

    Optuna's values of a finished trial are immutable, so the second value lives in the study
    attr `latency_remeasured`; every reader (pareto, export, status) sees it through this frame.
    """
    from nas.storage import remeasured, remeasured_latency

    again = remeasured(study)
    for row in rows:
        second = remeasured_latency(again.get(str(row["number"])))
        first = row.get("latency_attr_ms", row.get("latency_ms"))  # the trial's own first measurement
        row["latency_first_ms"] = first
        row["latency_remeasured"] = second is not None
        row["latency_change"] = None
        if second is not None:
            row["latency_ms"] = second
            if isinstance(first, (int, float)):
                # signed as "the re-measure moved the value by": +5% = the second look is 5% slower
                row["latency_change"] = second / first - 1.0 if first > 0 else None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, named objectives, arch fields and JSON, latency, durations.

    Objective columns are named by metric ("accuracy", "mmacs", "latency_ms"); their units
    are in `df.attrs["units"]`, directions in `df.attrs["directions"]`. Trials that are not
    COMPLETE have no objective values; their user attrs (e.g. the MACs of an over-budget
    trial) still fill the columns of the same name.
    """
    import pandas as pd

    names = objective_names(study)
    space = _space(study.user_attrs.get("space"))
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        for a in TRIAL_ATTRS:
            row[a] = ua.get(a)
        row["latency_attr_ms"] = ua.get("latency_ms")
        n_params = ua.get("n_params", ua.get("params"))  # a raw count ("params" in older studies)
        row["n_params"] = n_params
        row["params"] = n_params / 1e6 if isinstance(n_params, (int, float)) else None  # one unit: millions
        if t.values is not None:
            for n, v in zip(names, t.values, strict=False):
                row[n] = v
        row.update(_arch_fields(ua.get("arch"), space))
        if "width" in t.params:
            row["width"] = t.params["width"]
        row.setdefault("width", None)
        row["arch"] = ua.get("arch")
        dur = None
        if t.datetime_start and t.datetime_complete:
            dur = (t.datetime_complete - t.datetime_start).total_seconds()
        row["duration_s"] = dur
        row["sampler_params"] = json.dumps(t.params, sort_keys=True) if t.params else None
        rows.append(row)
    _apply_remeasured(rows, study)
    for row in rows:
        row.pop("latency_attr_ms", None)
    cols = ["number", "state", *names]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=[*cols, *TRIAL_ATTRS, "arch"])
    for n in names:
        if n not in df.columns:
            df[n] = math.nan
        df[n] = pd.to_numeric(df[n], errors="coerce")
    df = df[[*cols, *[c for c in df.columns if c not in cols]]].sort_values("number").reset_index(drop=True)
    df.attrs["objectives"] = names
    df.attrs["directions"] = study_directions(study)
    df.attrs["units"] = units(list(dict.fromkeys([*names, *UNITS])))
    df.attrs["study"] = study.study_name
    df.attrs["budget"] = budget(study)
    df.attrs["backend"] = study.user_attrs.get("backend")
    return df
