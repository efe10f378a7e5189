"""Every scoring and training path creates its tensors and models on the device of the data it meets.

CI has no GPU, so a tensor made on the CPU by default next to CUDA data (the bug class of
issue #19: synflow's all-ones input, NASWOT's models, index tensors) cannot show there. Here
the default device is `meta` while each path runs on real CPU data and CPU models: anything
created without an explicit device lands on `meta`, and mixing it with the CPU tensors (or
reading a value from it) fails. The data are loaded before the switch (loading is not a
device path: it always makes CPU tensors that evaluate moves once).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nas.experiment import Experiment, load_experiment
from objectives.data import ProxyData, load_dataset
from search_spaces import make_arch


@contextlib.contextmanager
def meta_default() -> Iterator[None]:
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)


def test_meta_default_catches_an_implicit_tensor() -> None:
    """The trap works: a tensor made without a device beside CPU data fails."""
    x = torch.ones(2, 3, device="cpu")
    with meta_default(), pytest.raises((RuntimeError, NotImplementedError)):
        float((x * torch.ones(2, 3)).sum())
    assert torch.ones(1).device.type == "cpu"  # restored


@pytest.fixture(scope="module")
def data() -> ProxyData:
    return load_dataset("default", train_size=120, val_size=40, resolution=16)


def _proxy_arch(data: ProxyData) -> Any:
    arch = make_arch(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10)
    return arch.for_proxy(in_channels=data.in_channels, num_classes=data.num_classes, resolution=data.resolution)


def _model(data: ProxyData) -> torch.nn.Module:
    from search_spaces import build_model

    torch.manual_seed(0)
    return build_model(_proxy_arch(data))  # built before the switch: a CPU model, as a caller hands over


def _zero_cost_path(name: str) -> Callable[[ProxyData], Any]:
    def run(data: ProxyData) -> Any:
        from objectives.zero_cost import zero_cost_scores

        model = _model(data)
        x, y = data.train.tensors[0][:16], data.train.tensors[1][:16]
        with meta_default():
            return zero_cost_scores(model, x, y, proxies=[name])[name]
    return run


def _arch_zero_cost(data: ProxyData) -> Any:
    from objectives.zero_cost import arch_zero_cost, proxy_batch

    with meta_default():
        x, y = proxy_batch(data, 16)
        scores = arch_zero_cost(_proxy_arch(data), x, y)
    assert set(scores) == {"synflow", "naswot", "grad_norm", "zico", "meco"}
    return sum(scores.values())


def _naswot_mean(data: ProxyData) -> Any:
    from objectives.zero_cost import naswot_mean

    with meta_default():
        return naswot_mean(_proxy_arch(data), data.train.tensors[0], draws=2, batch=16)


def _train(**kw: Any) -> Callable[[ProxyData], Any]:
    def run(data: ProxyData) -> Any:
        from objectives.accuracy import TrainConfig, train_proxy

        model = _model(data)
        with meta_default():
            return train_proxy(model, data, TrainConfig(epochs=1, batch_size=40, **kw)).accuracy
    return run


def _recalibrate_bn(data: ProxyData) -> Any:
    from objectives.accuracy import evaluate_accuracy, recalibrate_bn

    model = _model(data)
    with meta_default():
        recalibrate_bn(model, data.train.tensors[0], 2, 16, torch.Generator().manual_seed(0))
        return evaluate_accuracy(model, data.val.tensors[0], data.val.tensors[1])


def _oneshot(sampler: str) -> Callable[[ProxyData], Any]:
    """Supernet training (a few steps), loading and scoring a path with re-estimated BN."""

    def run(data: ProxyData) -> Any:
        import tempfile

        from objectives.oneshot import OneShotConfig, load_supernet, score_path, train_supernet
        from search_spaces import RandomTrial, ShuffleNetV1Space

        space = ShuffleNetV1Space(groups=(2, 4), widths=(0.25, 0.5), repeats=((1, 1), (1, 2), (1, 1)), num_classes=10)
        cfg = OneShotConfig(steps=2, sampler=sampler, batch_size=8, bn_batches=1, bn_batch_size=8,
                            checkpoint_every=1, device="cpu")
        with tempfile.TemporaryDirectory() as d, meta_default():
            path = Path(d) / "supernet.safetensors"
            train_supernet(space, lambda a: True, data, cfg, path, "k", size=lambda a: float(sum(
                s.out_channels * s.repeats for s in a.stages)))
            net = load_supernet(path, space, data, "k", device="cpu")
            arch = space.sample(RandomTrial(random.Random(0)))
            return score_path(net, arch, data, cfg)

    return run


PATHS: dict[str, Callable[[ProxyData], Any]] = {
    "oneshot[uniform]": _oneshot("uniform"),
    "oneshot[sandwich]": _oneshot("sandwich"),
    **{f"zero_cost[{n}]": _zero_cost_path(n) for n in ("synflow", "naswot", "grad_norm", "zico", "meco")},
    "arch_zero_cost": _arch_zero_cost,
    "naswot_mean": _naswot_mean,
    "train_proxy[sgd]": _train(),
    "train_proxy[adamw, bn_recalibrate, warmup]": _train(optimizer="adamw", lr=1e-3, bn_recalibrate=1,
                                                         warmup_steps=1),
    "train_proxy[deterministic]": _train(deterministic=True),
    "recalibrate_bn+evaluate_accuracy": _recalibrate_bn,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_objective_paths_follow_their_data(path: str, data: ProxyData) -> None:
    import math

    value = PATHS[path](data)
    assert isinstance(value, float) and math.isfinite(value)


# ------------------------------------------------------------------------ the pipeline (evaluate and its users)

def _exp(tiny_yaml: Callable[..., Path], objectives: str, extra: str = "") -> Experiment:
    f = tiny_yaml(name="meta", objectives=objectives, extra=extra, train_size=120, budget="max_mmacs: 50")
    exp = load_experiment(f)
    return exp.model_copy(update={"train": exp.train.model_copy(update={"device": "cpu"})})


def _warm(exp: Experiment) -> None:
    from nas.pipeline.evaluate import proxy_data

    proxy_data(exp, "cpu")  # the per-process cache, loaded before the switch


ARCH = dict(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10)
PIPELINE = {
    "evaluate[accuracy, zero_cost]": ("[accuracy, mmacs]", "zero_cost: true"),
    "evaluate[naswot]": ("[naswot, mmacs]", ""),
    "evaluate[zico, meco]": ("[zico, meco, mmacs]", ""),
    "evaluate[rungs]": ("[accuracy, mmacs]", "fidelity: {rungs: [1, 2]}\nearly_stopping: {enabled: false}"),
}


@pytest.mark.parametrize("path", list(PIPELINE))
def test_evaluate_paths_follow_their_data(path: str, tiny_yaml: Callable[..., Path], tmp_path: Path) -> None:
    import math

    from nas.pipeline.evaluate import evaluate

    objectives, extra = PIPELINE[path]
    exp = _exp(tiny_yaml, objectives, extra)
    _warm(exp)
    with meta_default():
        res = evaluate(make_arch(**ARCH), exp, run_dir=tmp_path)
    assert res.values and all(math.isfinite(v) for v in res.values.values())
    if "zero_cost" in path:
        assert {"synflow", "naswot", "grad_norm", "zico", "meco"} <= set(res.attrs["zero_cost"])


def test_export_retrain_follows_its_data(tiny_yaml: Callable[..., Path], tmp_path: Path) -> None:
    from nas.deploy.standalone import retrain

    exp = _exp(tiny_yaml, "[accuracy, mmacs]")
    _warm(exp)
    with meta_default():
        out = retrain(make_arch(**ARCH).to_json(), exp.model_dump(mode="json"), 1, tmp_path)
    assert 0.0 <= out["accuracy"] <= 1.0 and Path(out["weights"]).is_file()


def test_fidelity_follows_its_data(tiny_yaml: Callable[..., Path], tmp_path: Path) -> None:
    from nas.analysis.fidelity_run import fidelity_experiment, train_entries
    from objectives.ranking import ReferenceSet, load_reference

    exp = _exp(tiny_yaml, "[accuracy, mmacs]")
    _warm(fidelity_experiment(exp))
    ref = load_reference("shufflenet_v1_imagenet")
    small = sorted(ref.entries, key=lambda e: e.reference)[:2]
    two = ReferenceSet(ref.name, ref.source, ref.metric, tuple(small), ref.path)
    with meta_default():
        rows, hits = train_entries(exp, two, cache_dir=tmp_path / "cache")
    assert hits == 0 and len(rows) == 2
    assert all({"zico", "meco", "synflow"} <= set(r["zero_cost"]) for r in rows)


def test_train_command_follows_its_data(data: ProxyData, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import objectives.data
    from nas.cli import main

    monkeypatch.setattr(objectives.data, "load_dataset", lambda *a, **kw: data)
    with meta_default():
        assert main(["train", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--device", "cpu", "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1.0
