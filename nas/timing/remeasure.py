"""The end-of-search re-measure: the Pareto set and every flagged trial measured again in one window.

Optuna and Ray call `remeasure_front` when a search ends. Finished trials are immutable in Optuna,
so the second values live in the study attr `latency_remeasured` (nas.storage.REMEASURED, read by
nas.storage.remeasured), which `nas.analysis.frame.trials_frame` applies.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from nas.storage import REMEASURED, remeasured, write_remeasured_values
from nas.timing.measure import INTERLEAVED_BACKENDS, _ref_arch, baseline, drift_config, make_latency_backend, references

if TYPE_CHECKING:
    import optuna

    from nas.experiment import Experiment

log = logging.getLogger("nas.search")


def _measuring_backend(exp: Experiment) -> Any:
    """What the re-measure times with: the study's backend, or (a predictor, a LUT) local ONNX
    Runtime or the configured device agent."""
    lat = exp.latency
    if lat.backend in INTERLEAVED_BACKENDS:
        return make_latency_backend(lat)
    if lat.backend == "torch":
        return None  # torch latencies are not ONNX Runtime ones: re-measuring would change the runtime
    return make_latency_backend(lat.model_copy(update={"backend": "remote" if lat.device else "onnxruntime"}))


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
        write_remeasured_values(study, done)
        total += len(done)
        log.info("re-measured the latency of %d trial(s) (Pareto set and flagged) in one window, %.1f s",
                 len(done), time.perf_counter() - t0)
    return total


def _to_remeasure(study: optuna.Study, exp: Experiment) -> dict[int, Any]:
    from nas.analysis.frame import trials_frame
    from nas.analysis.front import pareto_info
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
