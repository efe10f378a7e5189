"""Drift-aware latency in a study: per-trial measurement, the study's baselines, the end-of-search re-measure.

The protocol itself (interleaved blocks, ratio, probe) is objectives/latency/drift.py; this module
ties it to a study:
- each reference network's baseline time is measured once and kept in the study's user attrs
  (`latency_baseline:<preset>@<device>`; the first writer wins, so every worker and every resumed run
  normalises with the same value);
- a trial's latency objective is ratio x baseline, its probe (reference now / baseline) is
  recorded and the trial flagged beyond `latency.drift.flag_threshold`;
- at the end of a search (Optuna and Ray call `remeasure_front`), the Pareto set and every
  flagged trial are measured again in one window; finished trials are immutable in Optuna, so the
  second values live in the study attr `latency_remeasured` ({trial number: {...}}), which
  `nas.results.trials_frame` applies.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.experiment import Experiment

log = logging.getLogger("nas.search")

#: backends the interleaved protocol measures through (it times ONNX locally or on a device agent)
INTERLEAVED_BACKENDS = ("onnxruntime", "remote")
REMEASURED = "latency_remeasured"
BASELINE = "latency_baseline:"


def drift_config(exp: Experiment) -> Any:
    """The protocol's settings; block length defaults to latency.min_time_s / pairs (the candidate's
    timed seconds stay what min_time_s says)."""
    from objectives.latency.drift import DriftConfig

    d = exp.latency.drift
    block = d.block_s if d.block_s is not None else exp.latency.min_time_s / d.pairs
    return DriftConfig(block_s=block, pairs=d.pairs, flag_threshold=d.flag_threshold, min_runs=d.min_runs)


def interleaved(exp: Experiment) -> bool:
    """True when trials are measured interleaved with a reference (else plain, or predicted)."""
    return exp.latency.drift.enabled and exp.latency.backend in INTERLEAVED_BACKENDS


def references(exp: Experiment) -> list[str]:
    from objectives.latency.drift import DEFAULT_REFERENCES

    ref = exp.latency.drift.reference
    if ref:
        return [ref] if isinstance(ref, str) else list(ref)
    return list(DEFAULT_REFERENCES.get(str(exp.space.get("family")), DEFAULT_REFERENCES["shufflenet_v1"]))


def _ref_arch(exp: Experiment, name: str) -> Any:
    from objectives.latency.drift import reference_arch

    return reference_arch(name, exp.deploy.shape, exp.deploy.classes)


def drop_defaults(latency: dict[str, Any]) -> dict[str, Any]:
    """The latency section as a study's identity: `drift` only where it takes effect (an enabled
    section with a backend that interleaves), so a study made before the option (no `drift`, plain
    medians) never continues with interleaved values beside its plain ones; `remeasure_front`
    only when off."""
    out = dict(latency)
    drift = out.pop("drift", None)
    if isinstance(drift, dict) and drift.get("enabled") and out.get("backend") in INTERLEAVED_BACKENDS:
        out["drift"] = drift
    if out.get("remeasure_front", True) is True:
        out.pop("remeasure_front", None)
    return out


# ---------------------------------------------------------------------------- the study's baselines

_STUDIES: dict[tuple[str, str], optuna.Study] = {}


def _study(url: str, name: str) -> optuna.Study | None:
    """The study this process evaluates for, loaded once (None outside a search: export, fidelity)."""
    import optuna

    from nas.results import sqlite_path

    if (url, name) in _STUDIES:
        return _STUDIES[(url, name)]
    path = sqlite_path(url)
    if url.startswith("sqlite:") and (path is None or not path.is_file()):
        return None
    try:
        storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception:  # not created, or another node's SQLite file: a per-process baseline
        return None
    _STUDIES[(url, name)] = study
    return study


_LOCAL: dict[tuple[str, str, str], float] = {}


def baseline(exp: Experiment, backend: Any, name: str, study: optuna.Study | None = None) -> float:
    """The reference's baseline time (ms) of this study on this device: stored once, first writer wins
    (keyed by device too, so two devices of one study never overwrite each other's baseline)."""
    fp = str(backend.device_info()["fingerprint"])
    key = f"{BASELINE}{name}@{fp}"
    local = (exp.storage_url, exp.study_name, f"{name}@{fp}")
    if local in _LOCAL:
        return _LOCAL[local]
    study = study or _study(exp.storage_url, exp.study_name)
    stored = _stored(study, key, fp)
    if stored is None:
        from objectives.latency.drift import blocks_for, export, reference_time

        shape = exp.deploy.shape
        blocks = blocks_for(backend)  # only interleaving backends get here (measure_trial, _measuring_backend)
        ms = reference_time(blocks, blocks.load(export(_ref_arch(exp, name), shape, backend), shape),
                            drift_config(exp))
        if study is not None:
            stored = _stored(study, key, fp)  # another worker may have written it meanwhile: keep the first
            if stored is None:
                study.set_user_attr(key, {"ms": ms, "device": fp, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                log.info("latency baseline of %s: %.3f ms", name, ms)
        stored = stored if stored is not None else ms
    _LOCAL[local] = stored
    return stored


def _stored(study: optuna.Study | None, key: str, fingerprint: str) -> float | None:
    if study is None:
        return None
    v = study._storage.get_study_user_attrs(study._study_id).get(key)  # fresh, not the cached copy
    if isinstance(v, dict) and v.get("device") == fingerprint and isinstance(v.get("ms"), (int, float)):
        return float(v["ms"])
    return None


# ---------------------------------------------------------------------------- one trial

def measure_trial(exp: Experiment, arch: Any, backend: Any, cache: Any) -> tuple[float, Any, dict[str, Any]]:
    """(objective latency ms, the LatencyResult, the drift attrs) of one trial, cache first."""
    from objectives.latency import api

    shape = exp.deploy.shape
    if not interleaved(exp):
        res = api.measure_latency(arch, shape, backend, cache=cache)
        return float(res.median_ms), res, {"latency_source": source(res)}
    from objectives.latency.drift import flagged, measure_cached, nearest_reference, probe

    name = nearest_reference(arch, references(exp), shape)
    cfg = drift_config(exp)
    res = measure_cached(arch, _ref_arch(exp, name), shape, backend, cfg, cache)
    base = baseline(exp, backend, name)
    p = probe(float(res.extra["reference_ms"]), base)
    normalised = float(res.extra["ratio"]) * base
    attrs = {
        "latency_source": source(res), "latency_raw_ms": float(res.median_ms), "latency_reference": name,
        "latency_reference_ms": float(res.extra["reference_ms"]), "latency_baseline_ms": base,
        "latency_ratio": float(res.extra["ratio"]), "latency_probe": p, "latency_speed": 1.0 / p,
        "latency_flagged": flagged(p, cfg.flag_threshold), "latency_normalised_ms": normalised,
    }
    return (normalised if exp.latency.drift.normalise else float(res.median_ms)), res, attrs


def source(res: Any) -> str:
    """measured | predicted | cached: where a trial's latency came from."""
    if (getattr(res, "extra", None) or {}).get("predicted"):
        return "predicted"
    return "cached" if getattr(res, "cached", False) else "measured"


# ---------------------------------------------------------------------------- end of search

def _measuring_backend(exp: Experiment) -> Any:
    """What the re-measure times with: the study's backend, or (a predictor, a LUT) local ONNX
    Runtime or the configured device agent."""
    from nas.evaluate import make_latency_backend

    lat = exp.latency
    if lat.backend in INTERLEAVED_BACKENDS:
        return make_latency_backend(lat)
    if lat.backend == "torch":
        return None  # torch latencies are not ONNX Runtime ones: re-measuring would change the runtime
    return make_latency_backend(lat.model_copy(update={"backend": "remote" if lat.device else "onnxruntime"}))


def remeasured(study: optuna.Study) -> dict[str, dict[str, Any]]:
    v = study.user_attrs.get(REMEASURED)
    return dict(v) if isinstance(v, dict) else {}


def remeasure_front(study: optuna.Study, exp: Experiment, *, max_rounds: int = 3) -> int:
    """Measure the Pareto set and every flagged trial again, interleaved with the references in one
    window; returns how many trials were measured. Trials already re-measured are not redone (a
    resumed search re-measures only what is new on its front)."""
    if exp.latency.backend == "none" or not exp.latency.remeasure_front:
        return 0
    backend = _measuring_backend(exp)
    if backend is None:
        log.info("front not re-measured: the torch backend's latencies are not comparable with ONNX Runtime's")
        return 0
    total = 0
    for _ in range(max_rounds):  # a re-measured value can move another trial onto the front
        todo = _to_remeasure(study, exp)
        if not todo:
            break
        t0 = time.perf_counter()
        try:
            done = _measure_window(exp, backend, todo, study)
        except Exception as e:  # the search's trials are all kept; only this second look is missing
            log.warning("front not re-measured (%s: %s); run the search again to re-measure it (only what is "
                        "missing is measured)", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            break
        merged = {**remeasured(study), **done}
        study.set_user_attr(REMEASURED, merged)
        total += len(done)
        log.info("re-measured the latency of %d trial(s) (Pareto set and flagged) in one window, %.1f s",
                 len(done), time.perf_counter() - t0)
    return total


def _to_remeasure(study: optuna.Study, exp: Experiment) -> dict[int, Any]:
    from nas.pareto import pareto_info
    from nas.results import trials_frame
    from search_spaces import ArchBase

    df = trials_frame(study)
    if df.empty or "latency_ms" not in df.columns:
        return {}
    have = remeasured(study)
    front = {int(n) for n in pareto_info(df).front["number"]}
    complete = df[df["state"] == "COMPLETE"]
    flags = complete["latency_flagged"] if "latency_flagged" in complete.columns else []
    flagged = {int(n) for n, f in zip(complete["number"], flags, strict=False) if f is True}
    want = sorted(n for n in front | flagged if str(n) not in have)
    rows = df.set_index("number")
    return {n: ArchBase.from_json(rows.loc[n, "arch"]) for n in want if isinstance(rows.loc[n, "arch"], str)}


def _measure_window(exp: Experiment, backend: Any, todo: dict[int, Any], study: optuna.Study) -> dict[str, Any]:
    """One window per reference: its candidates round-robin against it (objectives.latency.drift.interleave)."""
    from objectives.latency.drift import blocks_for, export, flagged, interleave, nearest_reference, probe

    shape = exp.deploy.shape
    cfg = drift_config(exp)
    blocks = blocks_for(backend)
    groups: dict[str, list[int]] = {}
    for n, arch in todo.items():
        groups.setdefault(nearest_reference(arch, references(exp), shape), []).append(n)
    out: dict[str, Any] = {}
    at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name, numbers in groups.items():
        base = baseline(exp, backend, name, study)
        ref = blocks.load(export(_ref_arch(exp, name), shape, backend), shape)
        cands = [blocks.load(export(todo[n], shape, backend), shape) for n in numbers]
        for n, m in zip(numbers, interleave(blocks, cands, ref, cfg), strict=True):
            p = probe(m.reference_ms, base)
            value = m.ratio * base if exp.latency.drift.normalise else m.candidate_ms
            out[str(n)] = {"latency_ms": value, "raw_ms": m.candidate_ms, "ratio": m.ratio, "reference": name,
                           "probe": p, "flagged": flagged(p, cfg.flag_threshold), "backend": backend.name,
                           "at": at}
    return out


def flag_counts(study: optuna.Study) -> dict[str, int]:
    """How many COMPLETE/PRUNED trials carry a probe, how many are flagged, how many were re-measured."""
    from optuna.trial import TrialState

    probed = flagged = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if "latency_probe" in t.user_attrs:
            probed += 1
            flagged += bool(t.user_attrs.get("latency_flagged"))
    return {"probed": probed, "flagged": flagged, "remeasured": len(remeasured(study))}
