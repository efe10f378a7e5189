"""One trial's evaluation, shared by the Optuna and the Ray backends.

Order matters and is cheapest-first: the analytic MACs gate (microseconds) runs before
anything is built, so an over-budget candidate is never built, measured or trained; then
latency (cache first), optional zero-cost scores, then proxy training with per-epoch
reports so a backend can stop a hopeless candidate early.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nas.experiment import Experiment
    from search_spaces import Arch

AttrSink = Callable[[str, Any], None]


class Reporter(Protocol):
    def report(self, epoch: int, accuracy: float, partial_values: dict[str, float]) -> bool:
        """Called after each proxy epoch; True stops (prunes) the trial."""
        ...

    # with a `fidelity` section, a reporter may also define promote(rung, values) -> bool:
    # called when the trial finishes a rung below the top; False stops it there (PRUNED), and
    # `continues` (a trial number or None): this trial continues that paused trial from its kept rungs


class OverBudget(Exception):
    """The candidate violates the budget; it was not trained. `constraint` as for Optuna (<= 0 feasible)."""

    def __init__(self, reason: str, attrs: dict[str, Any], constraint: list[float]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attrs = attrs
        self.constraint = constraint


class TrialTimeout(RuntimeError):
    """The trial ran past search.trial_timeout_s."""


@dataclass
class EvalResult:
    values: dict[str, float]  # objective name -> value (only the experiment's objectives)
    attrs: dict[str, Any]  # study-contract user attrs
    constraint: list[float] = field(default_factory=list)
    stopped_epoch: int | None = None  # set when the reporter stopped training

    def ordered(self, objectives: list[str]) -> list[float]:
        return [self.values[o] for o in objectives]


def constraint_values(exp: Experiment, mmacs: float, latency_ms: float | None = None) -> list[float]:
    """Fixed-length constraint vector: [mmacs - max, min - mmacs, latency - max_latency]."""
    b = exp.budget
    return [
        mmacs - b.max_mmacs,
        (b.min_mmacs - mmacs) if b.min_mmacs is not None else 0.0,
        (latency_ms - b.max_latency_ms) if (b.max_latency_ms is not None and latency_ms is not None) else 0.0,
    ]


@functools.lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, train_size: int | None, val_size: int | None, resolution: int | None,
             seed: int, download: bool) -> Any:
    from objectives.data import load_dataset

    return load_dataset(name, root=root, train_size=train_size, val_size=val_size, resolution=resolution,
                        seed=seed, download=download)


def proxy_data(exp: Experiment, device: Any = None) -> Any:
    """The proxy dataset, loaded once per process (and moved once to `device`, an accelerator)."""
    d = exp.data
    root = str(Path(d.root).expanduser()) if d.root else None
    data = _dataset(d.name, root, d.train_size, d.val_size, d.resolution, d.seed, d.download)
    return data if device is None or str(device) == "cpu" else _on_device(data, str(device))


@functools.lru_cache(maxsize=2)
def _on_device(data: Any, device: str) -> Any:
    import dataclasses

    from torch.utils.data import TensorDataset

    def move(ds: Any) -> Any:
        return TensorDataset(*(t.to(device) for t in ds.tensors))

    return dataclasses.replace(data, train=move(data.train), val=move(data.val))


@dataclass
class _Phases:
    """State the phases of one evaluation share: where attrs go as soon as known, and the deadline."""

    exp: Experiment
    run_dir: Path
    on_attr: AttrSink | None
    deadline: float | None
    attrs: dict[str, Any] = field(default_factory=dict)

    def put(self, key: str, value: Any) -> None:
        self.attrs[key] = value
        if self.on_attr is not None:
            self.on_attr(key, value)

    def check_time(self, phase: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TrialTimeout(f"trial time limit {self.exp.search.trial_timeout_s:g} s exceeded ({phase})")


def evaluate(
    arch: Arch,
    experiment: Experiment,
    reporter: Reporter | None = None,
    *,
    run_dir: str | Path | None = None,
    on_attr: AttrSink | None = None,
    deadline: float | None = None,
) -> EvalResult:
    """Score one deploy-shaped `arch`: MACs gate, latency, zero-cost, proxy training.

    `on_attr(key, value)` receives each user attr as soon as it is known (so a crash or a
    kill still leaves what was measured in the study). Raises `OverBudget` (not trained),
    `TrialTimeout` past `deadline` (time.monotonic()), or whatever a phase raised.
    """
    exp = experiment
    ph = _Phases(exp, Path(run_dir) if run_dir is not None else exp.run_dir, on_attr, deadline)
    t0 = time.perf_counter()
    mmacs, values = _macs_gate(ph, arch)
    latency_ms = _latency(ph, arch, mmacs, values)
    cons = constraint_values(exp, mmacs, latency_ms)
    ph.put("constraint", cons)
    if "oneshot_accuracy" in exp.objectives:
        _oneshot(ph, arch, values)
    stopped: int | None = None
    from objectives.scores import ZERO_COST_OBJECTIVES

    scored = bool(set(ZERO_COST_OBJECTIVES) & set(exp.objectives))
    if exp.zero_cost or exp.needs_training or scored:
        model, proxy, data = _proxy_model(ph, arch)
        if exp.zero_cost or scored:
            _zero_cost(ph, model, proxy, data, values)
        if not exp.needs_training:
            ph.put("time_train_s", 0.0)
        else:
            values, stopped = _train(ph, arch, model, proxy, data, reporter, values, latency_ms)
    else:
        ph.put("time_train_s", 0.0)
    ph.put("time_eval_s", time.perf_counter() - t0)
    return EvalResult(values={k: values[k] for k in exp.objectives if k in values}, attrs=ph.attrs,
                      constraint=cons, stopped_epoch=stopped)


def _macs_gate(ph: _Phases, arch: Arch) -> tuple[float, dict[str, float]]:
    """Analytic MACs and params (microseconds); OverBudget before anything is built."""
    from objectives.flops import analytic_macs, analytic_params

    exp, put = ph.exp, ph.put
    t0 = time.perf_counter()
    _c, h, w = exp.deploy.shape
    mmacs = analytic_macs(arch, (h, w)) / 1e6
    params = analytic_params(arch)
    put("arch", arch.to_json())
    put("arch_id", arch.arch_id)
    put("mmacs", mmacs)
    put("n_params", params)  # a raw count; the "params" objective is in millions
    put("time_macs_s", time.perf_counter() - t0)
    values: dict[str, float] = {"mmacs": mmacs, "params": params / 1e6}  # objective unit: Mparams
    b = exp.budget
    if mmacs > b.max_mmacs or (b.min_mmacs is not None and mmacs < b.min_mmacs):
        lo = f"{b.min_mmacs:g}" if b.min_mmacs is not None else "0"
        reason = f"over budget: {mmacs:.2f} MMACs outside [{lo}, {b.max_mmacs:g}] MMACs at {exp.deploy.input}"
        cons = constraint_values(exp, mmacs)
        put("constraint", cons)
        raise OverBudget(reason, ph.attrs, cons)
    return mmacs, values


def _latency(ph: _Phases, arch: Arch, mmacs: float, values: dict[str, float]) -> float | None:
    """Latency (cache first; drift-normalised, see nas.timing) into `values`; None without a latency backend."""
    exp, put = ph.exp, ph.put
    if exp.latency.backend == "none":
        put("time_latency_s", 0.0)
        return None
    ph.check_time("before latency")
    t1 = time.perf_counter()
    from nas.timing.measure import backend_for, latency_cache, measure_trial

    backend = backend_for(exp.latency)
    # interleaved with a reference network (nas.timing) unless drift is off or the backend predicts
    latency_ms, res, drift_attrs = measure_trial(exp, arch, backend, latency_cache(exp, ph.run_dir))
    put("latency_ms", latency_ms)
    for key, value in drift_attrs.items():
        put(key, value)
    put("latency_p90_ms", float(res.p90_ms))
    put("latency_spread", float(res.spread))
    put("latency_n", int(res.n))
    put("latency_backend", str(res.backend))
    put("device", str(getattr(res, "device_label", "") or res.device))
    put("device_fingerprint", str(res.device))
    put("latency_cached", bool(getattr(res, "cached", False)))
    put("time_latency_s", time.perf_counter() - t1)
    values["latency_ms"] = latency_ms
    b = exp.budget
    if b.max_latency_ms is not None and latency_ms > b.max_latency_ms:
        cons = constraint_values(exp, mmacs, latency_ms)
        put("constraint", cons)
        raise OverBudget(f"over budget: latency {latency_ms:.2f} ms > max_latency_ms {b.max_latency_ms:g}",
                         ph.attrs, cons)
    return latency_ms


def _oneshot(ph: _Phases, arch: Arch, values: dict[str, float]) -> None:
    """Objective oneshot_accuracy: the path's top-1 with inherited weights; records which supernet scored it."""
    from nas.pipeline.supernets import trained_supernet
    from objectives.accuracy import resolve_device
    from objectives.oneshot import score_path

    ph.check_time("before one-shot")
    t0 = time.perf_counter()
    data = proxy_data(ph.exp, resolve_device(ph.exp.oneshot_recipe.device))
    net, path, key = trained_supernet(ph.exp, data)  # loaded once per worker process
    acc = float(score_path(net, arch, data, ph.exp.oneshot_recipe.to_config()))
    ph.put("supernet", str(path))
    ph.put("supernet_key", key)
    ph.put("oneshot_accuracy", acc)
    ph.put("time_oneshot_s", time.perf_counter() - t0)
    values["oneshot_accuracy"] = acc


def _proxy_model(ph: _Phases, arch: Arch) -> tuple[Any, Any, Any]:
    """The proxy-shaped network, seeded and built on the CPU (same init everywhere), on its device."""
    from objectives.accuracy import build_on, resolve_device, seed_everything

    exp = ph.exp
    try:
        device = resolve_device(exp.train.device)
    except ValueError as e:
        raise RuntimeError(f"train.{e}") from None
    ph.put("train_device", str(device))
    if device.type == "cuda":  # which physical GPU (a local worker sees its own as cuda:0): status counts per GPU
        import os

        import torch

        from objectives.accuracy import CUBLAS_DETERMINISTIC

        if exp.train.deterministic:  # before zero-cost scoring: cuBLAS reads it when it first sizes a workspace
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)

        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        ph.put("train_gpu", visible[device.index or 0] if len(visible) > (device.index or 0) else str(device.index or 0))
        ph.put("train_gpu_name", torch.cuda.get_device_name(device))
    data = proxy_data(exp, device)
    proxy = arch.for_proxy(in_channels=data.in_channels, num_classes=data.num_classes,
                           resolution=data.resolution)
    seed_everything(exp.train.seed)
    model = build_on(proxy, device)  # moved once
    return model, proxy, data


def _zero_cost(ph: _Phases, model: Any, proxy: Any, data: Any, values: dict[str, float]) -> None:
    """Zero-cost scores (stored as attrs) and the zero-cost objectives, on the first proxy batch
    (NASWOT: the mean over draws of `naswot_mean`)."""
    exp, put = ph.exp, ph.put
    ph.check_time("before zero-cost")
    t2 = time.perf_counter()
    from objectives.zero_cost import zero_cost_scores

    x, y = data.train.tensors[0][:64], data.train.tensors[1][:64]
    one_batch = [o for o in ("zico", "meco") if o in exp.objectives]
    if exp.zero_cost or one_batch:
        zc = {k: float(v) for k, v in zero_cost_scores(model, x, y, seed=exp.train.seed,
                                                        proxies=None if exp.zero_cost else one_batch).items()}
        if exp.zero_cost:
            put("zero_cost", zc)
        for o in one_batch:
            if not math.isfinite(zc[o]):
                raise RuntimeError(f"{o} score is not finite ({zc[o]})")
            put(o, zc[o])
            values[o] = zc[o]
    if "naswot" in exp.objectives:
        from objectives.zero_cost import naswot_mean

        nw = naswot_mean(proxy, data.train.tensors[0], seed=exp.train.seed)
        if not math.isfinite(nw):
            raise RuntimeError(f"NASWOT score is not finite ({nw}): the proxy images include "
                               "duplicates or the network collapses them")
        put("naswot", nw)
        values["naswot"] = nw
    put("time_zero_cost_s", time.perf_counter() - t2)


def _train(ph: _Phases, arch: Arch, model: Any, proxy: Any, data: Any, reporter: Reporter | None,
           values: dict[str, float], latency_ms: float | None) -> tuple[dict[str, float], int | None]:
    """Proxy training with per-epoch reports (or rung by rung); the values with accuracy, and the
    epoch the reporter stopped it at (None: trained to the end)."""
    exp, put, rd = ph.exp, ph.put, ph.run_dir
    ph.check_time("before training")
    from objectives.accuracy import train_proxy  # at call time: tests hold a trial by patching it

    t3 = time.perf_counter()
    stopped: int | None = None

    def with_score(acc: float) -> dict[str, float]:
        v = dict(values, accuracy=acc)
        if exp.score is not None and latency_ms is not None:
            from objectives.scores import scalarized

            v["score"] = float(scalarized(acc, latency_ms, exp.score.target_ms, exp.score.w))
        return v

    def report(epoch: int, acc: float) -> bool:
        nonlocal stopped
        put(f"acc_epoch_{epoch}", float(acc))
        ph.check_time(f"epoch {epoch}")
        if reporter is not None and reporter.report(epoch, float(acc), with_score(float(acc))):
            stopped = epoch
            return True
        return False

    if exp.fidelity is None:
        tr = train_proxy(model, data, exp.train.to_train_config(), report)
    else:  # successive halving: train rung by rung, the reporter decides each promotion
        from nas.schedulers.rungs import RungCheckpoint, fingerprint, train_rungs

        ckpt = RungCheckpoint(rd, arch.arch_id, fingerprint(exp, arch.to_json()))
        continues = getattr(reporter, "continues", None)
        if continues is not None:
            put("continues", int(continues))
        tr, stop_rung = train_rungs(model, data, exp, ckpt, report, getattr(reporter, "promote", None), put,
                                    with_score, continues_rung=getattr(reporter, "continues_rung", None))
        stopped = tr.epochs_run if stop_rung is not None else None
    acc = float(tr.accuracy)
    if not math.isfinite(acc):
        raise RuntimeError(f"proxy accuracy is not finite ({acc})")
    put("accuracy", acc)
    put("best_accuracy", float(tr.best_accuracy))
    put("epochs_run", int(tr.epochs_run))
    put("acc_history", [float(a) for _, a in tr.history])
    put("train_loss_mean", float(tr.mean_train_loss))
    put("time_train_s", time.perf_counter() - t3)
    put("images_per_second", float(tr.images_per_second))
    values = with_score(acc)
    if stopped is not None:
        put("stopped_epoch", stopped)
    if exp.keep_weights and stopped is None:
        from safetensors.torch import save_file

        wdir = rd / "weights"
        wdir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(wdir / f"{arch.arch_id}.safetensors"),
                  metadata={"arch": proxy.to_json(), "deploy_arch_id": arch.arch_id})
        put("weights", str(wdir / f"{arch.arch_id}.safetensors"))
    return values, stopped
