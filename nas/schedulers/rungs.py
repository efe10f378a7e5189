"""Multi-fidelity, multi-objective successive halving (asynchronous, as ASHA, with Pareto ranks).

Why our own rule: Optuna cannot prune multi-objective studies and Ray's ASHA ranks one
metric, so neither can promote "the non-dominated third" of a rung. The rule here is a pure
function of the objective vectors of the trials that finished a rung so far; a backend asks
it when a trial finishes a rung, and the trial either trains on (same model) to the next
rung or pauses: it is recorded PRUNED with the rung it reached and its rung weights are kept.
Like ASHA (Li et al. 2020) it never waits for a rung to fill: a trial is promoted when it lies
in the top `promote` fraction of its rung's finished set, once the set holds at least
`min_population` trials -- either at the moment it finishes the rung, or later: whenever a
worker looks for work it first asks `next_promotion`, top rung down, whether a paused trial
is now in its rung's promoted fraction, and if so continues that architecture from its kept
weights in a new trial (user attr "continues": the paused trial's number; its finished rungs
are replayed, not retrained). Without that second path the first trials of a rung, judged
against a tiny population, would hold the rung slots and later, better trials never get one.
A rung's population counts each architecture once (its first trial that finished the rung).

Order within a rung is NSGA-II's: non-dominated sorting (moocore), then crowding distance
(larger first, boundary points infinite), then trial number (earlier first) so ties are
deterministic on every backend.

Storage (study contract): the objective vector reached at rung r (1-based) lives in the
trial user attr "rung_<r>" ({objective: value}); "rung" holds the highest rung finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from nas.experiment import Experiment


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

def arch_key(trial: Any) -> str:
    """What makes two trials one candidate: the arch id (a trial without one is its own)."""
    return str(trial.user_attrs.get("arch_id") or f"#{trial.number}")


def first_per_arch(trials: Sequence[Any], rung: int) -> list[Any]:
    """The trials that finished `rung`, one per architecture (the earliest): a continuation replays
    its paused trial's rungs, and one architecture must not count twice in a rung or a front."""
    seen: set[str] = set()
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        if isinstance(t.user_attrs.get(f"rung_{rung}"), dict) and arch_key(t) not in seen:
            seen.add(arch_key(t))
            out.append(t)
    return out


def rung_vectors(trials: Sequence[Any], rung: int, objective_names: Sequence[str]) -> dict[int, list[float]]:
    """{trial number: objective vector at `rung`} for the trials whose user attrs hold "rung_<rung>",
    one per architecture (`first_per_arch`)."""
    out: dict[int, list[float]] = {}
    for t in first_per_arch(trials, rung):
        rec = t.user_attrs[f"rung_{rung}"]
        if all(isinstance(rec.get(o), (int, float)) for o in objective_names):
            out[t.number] = [float(rec[o]) for o in objective_names]
    return out


def rung_population(study: optuna.Study, rung: int, objective_names: Sequence[str]) -> dict[int, list[float]]:
    """The rung's finished set as the study holds it: COMPLETE, PRUNED and RUNNING search trials (a
    FAILed trial's rung results count through its retry, which replays them; reference presets
    are comparison points, not candidates, and are left out)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    return rung_vectors([t for t in trials if not t.user_attrs.get("reference_preset")], rung, objective_names)


# ------------------------------------------------------------------------------ training by rungs

class RungCheckpoint:
    """The rungs one architecture has finished, kept on disk until it finishes the top rung, so a
    trial killed inside rung r is retried at rung r, and a paused trial promoted later continues
    from its rung's weights: the model is reloaded from the last finished rung (safetensors, no
    pickle) and the earlier rungs' results are replayed, never re-trained. A paused architecture
    that is never promoted keeps its files (a resumed search with more trials may still promote it).

    Keyed by arch id under run_dir/rungs/, with a fingerprint of what shapes training (train, data,
    rung schedule): a record written under another recipe is ignored.
    """

    def __init__(self, run_dir: Path, arch_id: str, fingerprint: str) -> None:
        self.dir = Path(run_dir) / "rungs"
        self.stem = arch_id
        self.fingerprint = fingerprint

    @property
    def _json(self) -> Path:
        return self.dir / f"{self.stem}.json"

    def _weights(self, rung: int) -> Path:
        return self.dir / f"{self.stem}.r{rung}.safetensors"

    def load(self, model: Any) -> list[dict[str, Any]]:
        """Finished rung records (in order), with `model` holding the last one's weights; [] if none usable."""
        try:
            doc = json.loads(self._json.read_text())
        except (OSError, ValueError):
            return []
        recs = doc.get("rungs") if isinstance(doc, dict) and doc.get("fingerprint") == self.fingerprint else None
        if not isinstance(recs, list) or not recs or not self._weights(len(recs)).is_file():
            return []
        from safetensors.torch import load_file

        device = next(iter(model.state_dict().values())).device
        try:
            model.load_state_dict(load_file(str(self._weights(len(recs))), device=str(device)))
        except (OSError, RuntimeError, ValueError):
            return []
        return recs

    def save(self, model: Any, records: list[dict[str, Any]]) -> None:
        """Weights of the last finished rung, then (atomically) the records that point at them."""
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(self._weights(len(records))))
        tmp = self._json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "rungs": records}))
        os.replace(tmp, self._json)
        for old in range(1, len(records)):
            self._weights(old).unlink(missing_ok=True)

    def clear(self) -> None:
        for p in self.dir.glob(f"{self.stem}.*"):
            p.unlink(missing_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the architecture's rungs for the whole training (an OS lock, released when the process
        dies): a twin of the same architecture waits, then replays what this one kept, instead of
        training the same rung beside it or clearing weights it still needs."""
        import fcntl

        locks = self.dir.parent / "locks"  # beside the checkpoints: a lock file outlives them (never unlinked)
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{self.stem}.rungs.lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def fingerprint(exp: Experiment, arch_json: str) -> str:
    """What a rung's result depends on besides the architecture (not where it trains)."""
    train = exp.train.model_dump(mode="json")
    train.pop("device", None)
    doc = {"arch": arch_json, "train": train, "data": exp.data.model_dump(mode="json"),
           "fidelity": exp.fidelity.model_dump(mode="json") if exp.fidelity else None}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def train_rungs(model: Any, data: Any, exp: Experiment, ckpt: RungCheckpoint, report: Callable[[int, float], bool],
                decide: Callable[[int, dict[str, float]], bool] | None, put: Callable[[str, Any], None],
                objective_values: Callable[[float], dict[str, float]],
                continues_rung: int | None = None) -> tuple[Any, int | None]:
    """Train `model` rung by rung (each rung continues the same model for the extra epochs, with
    the experiment's recipe and a fresh schedule); after each rung but the last, record
    "rung_<r>" and ask `decide(r, values)` whether to go on. Returns (TrainResult over all
    epochs trained, the rung it stopped at or None when it finished the top rung).

    `report(epoch, acc)` gets global epoch numbers; `decide` None promotes everything.
    `continues_rung`: this trial continues one that paused at that rung (promoted later), so the kept
    rungs are replayed and training goes on past that rung (a later rung a twin kept keeps its own
    decision). The architecture's rungs are locked meanwhile (`RungCheckpoint.locked`).
    """
    with ckpt.locked():
        return _train_rungs(model, data, exp, ckpt, report, decide, put, objective_values, continues_rung)


def _train_rungs(model: Any, data: Any, exp: Experiment, ckpt: RungCheckpoint, report: Callable[[int, float], bool],
                 decide: Callable[[int, dict[str, float]], bool] | None, put: Callable[[str, Any], None],
                 objective_values: Callable[[float], dict[str, float]],
                 continues_rung: int | None) -> tuple[Any, int | None]:
    import dataclasses

    from objectives.accuracy import TrainResult, train_proxy

    if exp.fidelity is None:
        raise ValueError("train_rungs: the experiment has no fidelity section")
    rungs, base = exp.fidelity.rungs, exp.train.to_train_config()
    records = ckpt.load(model)
    for r, rec in enumerate(records, 1):  # replay what a killed attempt finished
        for e, acc in rec["history"]:
            put(f"acc_epoch_{e}", acc)
        put(f"rung_{r}", rec["values"])
        put("rung", r)
    if records:
        put("rungs_resumed", len(records))
        if continues_rung is not None and 1 <= continues_rung <= len(records):
            records[continues_rung - 1]["promoted"] = True  # the rung it paused at, not the last kept one
    stopped = None if not records or records[-1]["promoted"] else len(records)
    for r in range(len(records) + 1, len(rungs) + 1) if stopped is None else ():
        offset = rungs[r - 2] * base.epochs if r > 1 else 0
        cfg = dataclasses.replace(base, epochs=rungs[r - 1] * base.epochs - offset, seed=base.seed + r - 1)
        last = train_proxy(model, data, cfg, lambda e, a, o=offset: report(o + e, a))
        values = objective_values(float(last.accuracy))
        put(f"rung_{r}", values)
        put("rung", r)
        promoted = r == len(rungs) or decide is None or bool(decide(r, values))
        records.append({"values": values, "promoted": promoted, "history": [[offset + e, a] for e, a in last.history],
                        "best": last.best_accuracy, "loss": last.mean_train_loss, "ips": last.images_per_second,
                        "seconds": last.seconds})
        if r == len(rungs):
            break
        ckpt.save(model, records)  # promoted: a killed retry resumes here; paused: a later promotion does
        if not promoted:
            stopped = r
            break
    if stopped is None:
        ckpt.clear()
    history = [(int(e), float(a)) for rec in records for e, a in rec["history"]]
    steps = [len(rec["history"]) for rec in records]
    return TrainResult(
        accuracy=history[-1][1], best_accuracy=max(rec["best"] for rec in records), epochs_run=len(history),
        seconds=sum(rec["seconds"] for rec in records), images_per_second=records[-1]["ips"], history=history,
        stopped_early=stopped is not None,
        mean_train_loss=sum(rec["loss"] * n for rec, n in zip(records, steps, strict=True)) / max(1, sum(steps)),
    ), stopped


def decide(study: optuna.Study, exp: Experiment, number: int, rung: int, values: Mapping[str, float],
           arch_id: str | None = None) -> bool:
    """Promote trial `number` past `rung` now? Its rung set is what the study holds now plus its own
    `values` (its attrs may not be written yet), with its architecture counted once (`arch_id`,
    else read from the trial). Shared by both backends, so they promote alike."""
    from objectives.scores import OBJECTIVES

    if exp.fidelity is None:
        return True
    trials = study.get_trials(deepcopy=False)
    me = [t for t in trials if t.number == number]
    if me and me[0].user_attrs.get("reference_preset"):
        return True  # a paper preset trains to the top rung: the reference point of the top rung's front
    arch_id = arch_id or (me[0].user_attrs.get("arch_id") if me else None)
    same = {t.number for t in trials if arch_id is not None and t.user_attrs.get("arch_id") == arch_id}
    names = list(exp.objectives)
    population = {k: v for k, v in rung_population(study, rung, names).items() if k not in same}
    population[number] = [float(values[o]) for o in names]
    return promotes(number, population, [OBJECTIVES[o].direction for o in names], exp.fidelity.promote,
                    exp.fidelity.population)


def next_promotion(study: optuna.Study, exp: Experiment) -> Any | None:
    """ASHA's first question when a worker looks for work: the paused trial to continue, or None.

    Top rung down, the rung's promoted fraction (the rule of `decide`: same order, same ties) is
    scanned best first for a trial that paused there (PRUNED at that rung) whose architecture
    has not reached the next rung and that no trial continues yet (waiting, running, finished
    or failed: a promotion is made once).
    """
    from optuna.trial import TrialState

    from objectives.scores import OBJECTIVES

    if exp.fidelity is None:
        return None
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    # a continuation that FAILed ("not run" beside a twin, or crashed) does not hold the promotion: the
    # paused trial is offered again
    continued = {t.user_attrs.get("continues") for t in trials if t.state != TrialState.FAIL}
    names = list(exp.objectives)
    dirs = [OBJECTIVES[o].direction for o in names]
    for r in range(len(exp.fidelity.rungs) - 1, 0, -1):
        further = {arch_key(t) for t in trials if t.state != TrialState.FAIL and f"rung_{r + 1}" in t.user_attrs}
        population = rung_population(study, r, names)
        for k in select_promoted(population, dirs, exp.fidelity.promote, exp.fidelity.population):
            t = by_number[k]
            if (t.state == TrialState.PRUNED and t.user_attrs.get("rung") == r and k not in continued
                    and arch_key(t) not in further):
                return t
    return None


def paused_rung(study: optuna.Study, number: Any) -> int | None:
    """The rung trial `number` paused at (its "rung" attr); None for None or a trial without one."""
    if number is None:
        return None
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    r = study._storage.get_trial(trial_id).user_attrs.get("rung")
    return int(r) if isinstance(r, int) else None


def enqueue_promotion(study: optuna.Study, exp: Experiment) -> int | None:
    """Queue the continuation of `next_promotion`'s trial (same params; the next ask takes it);
    returns the paused trial's number, or None when no paused trial is promotable."""
    t = next_promotion(study, exp)
    if t is None:
        return None
    study.enqueue_trial(t.params, user_attrs={"continues": t.number})
    return int(t.number)


# ------------------------------------------------------------------------------ reading a study by rung

def study_rungs(study: optuna.Study) -> list[int]:
    """The study's rung multiples ([] for a single-fidelity study)."""
    exp = study.user_attrs.get("experiment") or {}
    fid = exp.get("fidelity") if isinstance(exp, dict) else None
    rungs = fid.get("rungs") if isinstance(fid, dict) else None
    return [int(r) for r in rungs] if isinstance(rungs, list) else []


def trials_per_rung(study: optuna.Study) -> dict[int, int]:
    """{rung: architectures that finished it} (one counts at every rung it finished, once however many
    trials (a paused one and its continuation) hold the rung; FAIL trials left out)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    return {r: len(first_per_arch(trials, r)) for r in range(1, len(study_rungs(study)) + 1)}


def at_rung(df: pd.DataFrame, study: optuna.Study, rung: int | None = None) -> pd.DataFrame:
    """The trials frame seen at one rung, so a front never mixes rungs.

    Trials that finished `rung` (default: the highest rung a search trial -- not a reference
    preset -- finished; a short search may promote none to the top) carry their objective values at that
    rung and count as COMPLETE there (the search state stays in "search_state"); every other
    trial has no objective values. `df.attrs["rung"]` names the rung. A single-fidelity study
    is returned unchanged, and asking it for a rung is a UserError.
    """
    from nas.errors import UserError

    rungs = study_rungs(study)
    if not rungs:
        if rung is not None:
            raise UserError(f"argument --rung: study {study.study_name!r} has no fidelity rungs (single fidelity)")
        return df
    r = rung if rung is not None else _top_reached(study, len(rungs))
    if not 1 <= r <= len(rungs):
        raise UserError(f"argument --rung: must be 1..{len(rungs)} (the study's rungs {rungs}), got {r}")
    names = list(df.attrs.get("objectives") or [])
    at = {t.number: t.user_attrs[f"rung_{r}"] for t in first_per_arch(
        [t for t in study.get_trials(deepcopy=False) if t.state.name != "FAIL"], r)}
    out = df.copy()
    out.insert(2, "search_state", out["state"])
    reached = out["number"].isin(list(at))
    for n in names:
        rung_values = [float(at[k].get(n, math.nan)) if k in at else math.nan for k in out["number"]]
        if n == "latency_ms" and "latency_remeasured" in out.columns:
            # latency does not depend on the rung: the frame's value (re-measured at the end of the
            # search where it was, nas.storage.remeasured) wins over the one the rung record copied
            again = out["latency_remeasured"].fillna(False).astype(bool).to_numpy()
            rung_values = [float(v) if a and k in at else r
                           for v, a, k, r in zip(out[n], again, out["number"], rung_values, strict=True)]
        out[n] = rung_values
    out.loc[reached, "state"] = "COMPLETE"
    out.loc[~reached & (out["state"] == "COMPLETE"), "state"] = "OTHER_RUNG"
    out["rung"] = [r if k in at else None for k in out["number"]]
    out.attrs = {**df.attrs, "rung": r, "rungs": rungs}
    return out


def _top_reached(study: optuna.Study, n_rungs: int) -> int:
    top = 1
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "FAIL" and not t.user_attrs.get("reference_preset"):
            top = max([top, *(r for r in range(1, n_rungs + 1) if isinstance(t.user_attrs.get(f"rung_{r}"), dict))])
    return top


def rung_label(df: pd.DataFrame, epochs: int | None = None) -> str | None:
    """"rung 3 of 3 (9x train.epochs)" for a frame from `at_rung`, None for single fidelity."""
    r, rungs = df.attrs.get("rung"), df.attrs.get("rungs")
    if r is None or not rungs:
        return None
    budget = f"{rungs[r - 1] * epochs} epochs" if epochs else f"{rungs[r - 1]}x train.epochs"
    return f"rung {r} of {len(rungs)} ({budget}); values at this rung only"
