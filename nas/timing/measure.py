"""Latency in a study: its backend and cache, each trial's drift-aware measurement, the study's baselines.

The protocol itself (interleaved blocks, ratio, probe) is objectives/latency/drift.py; this module
ties it to a study:
- each reference network's baseline time is measured once and kept in the study's user attrs
  (`latency_baseline:<preset>@<device>`; the first writer wins, so every worker and every resumed run
  normalises with the same value);
- a trial's latency objective is ratio x baseline, its probe (reference now / baseline) is
  recorded and the trial flagged beyond `latency.drift.flag_threshold`;
- the end-of-search re-measure is nas.timing.remeasure.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.experiment import Experiment

log = logging.getLogger("nas.search")

#: backends the interleaved protocol measures through (it times ONNX locally or on a device agent)
INTERLEAVED_BACKENDS = ("onnxruntime", "remote")
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
    """The reference networks this study's candidates are timed against: the experiment's, else the
    family's own (`LATENCY_REFERENCES` beside its presets)."""
    from search_spaces import get_family

    ref = exp.latency.drift.reference
    if ref:
        return [ref] if isinstance(ref, str) else list(ref)
    return list(get_family(str(exp.space["family"])).LATENCY_REFERENCES)


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

    from nas.storage import sqlite_path

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
            from nas.storage import set_study_attr_once

            # another worker may have measured it meanwhile: the first write wins, atomically
            mine = {"ms": ms, "device": fp, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            first = set_study_attr_once(study, key, mine)
            stored = float(first["ms"]) if isinstance(first, dict) and isinstance(first.get("ms"), (int, float)) \
                else None
            if first == mine:
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


# ---------------------------------------------------------------------------- the study's latency backend

@functools.lru_cache(maxsize=4)
def _backend_cached(lat_json: str) -> Any:
    from nas.experiment import LatencyConfig

    return make_latency_backend(LatencyConfig.model_validate_json(lat_json))


def backend_for(lat: Any) -> Any:
    """The latency backend of a `latency` section, one per process and section."""
    return _backend_cached(lat.model_dump_json())


def make_latency_backend(lat: Any) -> Any:
    """The latency backend named by an experiment's `latency` section (None for 'none')."""
    if lat.backend == "none":
        return None
    from objectives.latency import api
    from objectives.latency.base import MeasureConfig

    opts: dict[str, Any] = {"threads": lat.threads}
    if lat.backend in ("torch", "onnxruntime", "remote"):
        opts["config"] = MeasureConfig(warmup=lat.warmup, min_repeats=lat.repeats, min_time_s=lat.min_time_s)
    if lat.backend == "remote":
        opts.update(url=lat.device, token_file=lat.token_file)
    if lat.backend in ("predictor", "lut"):
        opts.update(table=lat.table)
    return api.get_backend(lat.backend, **opts)


def latency_cache(exp: Experiment, run_dir: Path) -> Any:
    if exp.latency.backend == "none":
        return None
    from objectives.latency import api

    path = Path(exp.latency.cache).expanduser() if exp.latency.cache else run_dir / "latency_cache.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return _cache_for(str(path), api)


@functools.lru_cache(maxsize=4)
def _cache_for(path: str, api: Any) -> Any:
    return api.LatencyCache(path)


