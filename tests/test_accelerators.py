"""train.device / train.amp: the CPU path everywhere, the CUDA path where a GPU is present.

The CUDA tests skip with the reason on a machine without a CUDA device (this project's CI
machine has none); they run as they are on one that has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas.cli import main
from nas.experiment import load_experiment
from objectives.accuracy import TrainConfig, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here: the CUDA path runs where a GPU is present")


def test_device_names_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if CUDA else "cpu")
    for bad in ("tpu", "cuda:x", "CPU", ""):
        with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
        with pytest.raises(ValueError, match="TrainConfig.device"):
            TrainConfig(device=bad)
    with pytest.raises(ValueError, match="TrainConfig.amp"):
        TrainConfig(amp="yes")  # type: ignore[arg-type]


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_asked_without_cuda_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="device cuda:1: CUDA is not available here"):
        resolve_device("cuda:1")


def test_search_records_the_training_device_on_every_trial(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(name="dev", n=2, extra="")
    f.write_text(f.read_text().replace("train: {epochs: 1,", "train: {device: cpu, amp: true, epochs: 1,"))
    assert main(["search", str(f), "--no-progress"]) == 0
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    trials = optuna.load_study(study_name="dev", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["train_device"] for t in trials] == ["cpu", "cpu"]  # amp has no effect on the CPU
    capsys.readouterr()
    assert main(["status", "dev", "--storage", url]) == 0
    assert "trained on: cpu (2 trials)" in capsys.readouterr().out
    # where it trains is how it runs, not what: the same study continues with another device
    f.write_text(f.read_text().replace("device: cpu", "device: auto"))
    assert main(["search", str(f), "--trials", "3", "--no-progress"]) == 0


def test_experiment_rejects_a_bad_device(tmp_path: Path, tiny_yaml: Callable[..., Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(name="bad")
    f.write_text(f.read_text().replace("train: {epochs: 1,", "train: {device: gpu0, epochs: 1,"))
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.device" in err and "'gpu0'" in err


def test_local_workers_take_one_gpu_each(tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.optuna_search import worker_gpu

    exp = load_experiment(tiny_yaml())
    assert [worker_gpu(exp, i, ["0", "1"]) for i in range(4)] == ["0", "1", "0", "1"]
    assert [worker_gpu(exp, i, ["3"]) for i in range(2)] == ["3", "3"]
    assert worker_gpu(exp, 0, []) is None  # no GPU: CPU training
    pinned = exp.model_copy(update={"train": exp.train.model_copy(update={"device": "cuda:1"})})
    cpu = exp.model_copy(update={"train": exp.train.model_copy(update={"device": "cpu"})})
    assert worker_gpu(pinned, 0, ["0", "1"]) is None and worker_gpu(cpu, 0, ["0", "1"]) is None


def test_ray_trials_ask_for_a_gpu_share(tiny_yaml: Callable[..., Path], need: Callable[[str], object]) -> None:
    need("ray.tune")
    from nas.backends.ray_search import trial_resources

    exp = load_experiment(tiny_yaml())
    assert trial_resources(exp) == {"cpu": 1}
    half = exp.model_copy(update={"search": exp.search.model_copy(update={"gpus_per_trial": 0.5})})
    assert trial_resources(half) == {"cpu": 1, "gpu": 0.5}


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_with_and_without_amp(tiny_yaml: Callable[..., Path], amp: bool) -> None:
    from nas.pipeline.evaluate import evaluate
    from search_spaces import make_arch

    exp = load_experiment(tiny_yaml())
    exp = exp.model_copy(update={"train": exp.train.model_copy(update={"device": "auto", "amp": amp})})
    attrs: dict[str, object] = {}
    arch = make_arch(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10)
    res = evaluate(arch, exp, on_attr=attrs.__setitem__)
    assert attrs["train_device"] == "cuda:0"
    assert math.isfinite(res.values["accuracy"]) and 0 <= res.values["accuracy"] <= 1


@needs_cuda
def test_cuda_worker_sees_only_its_gpu(tmp_path: Path, tiny_yaml: Callable[..., Path]) -> None:
    f = tiny_yaml(name="gpus", n=2, search="workers: 2")
    assert main(["search", str(f), "--no-progress"]) == 0
    trials = optuna.load_study(study_name="gpus", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}").get_trials()
    assert {t.user_attrs["train_device"] for t in trials} == {"cuda:0"}  # each worker's one visible GPU


def _with_search(exp, **kw):  # noqa: ANN001, ANN202 - Experiment
    return exp.model_copy(update={"search": exp.search.model_copy(update=kw)})


def test_trials_per_gpu_fills_each_gpu_with_n_workers(tiny_yaml: Callable[..., Path]) -> None:
    from collections import Counter

    from nas.backends.optuna_search import worker_gpu

    exp = load_experiment(tiny_yaml())
    two = _with_search(exp, trials_per_gpu=2)
    assert [worker_gpu(two, i, ["0", "1"]) for i in range(6)] == ["0", "0", "1", "1", "0", "0"]
    assert [worker_gpu(two, i, ["5", "7"]) for i in range(4)] == ["5", "5", "7", "7"]  # CUDA_VISIBLE_DEVICES ids
    for n, gpus in ((1, ["0", "1"]), (3, ["0", "1", "2"]), (4, ["0", "1"]), (8, ["0"])):
        per = _with_search(exp, trials_per_gpu=n)
        workers = n * len(gpus)
        assert Counter(worker_gpu(per, i, gpus) for i in range(workers)) == dict.fromkeys(gpus, n)
    assert worker_gpu(two, 0, []) is None  # no GPU: CPU training
    cpu = two.model_copy(update={"train": two.train.model_copy(update={"device": "cpu"})})
    assert worker_gpu(cpu, 1, ["0", "1"]) is None


def test_ray_trials_ask_for_one_nth_of_a_gpu(tiny_yaml: Callable[..., Path]) -> None:
    from nas.backends.ray_search import trial_resources  # ray itself is imported only when a search runs

    exp = load_experiment(tiny_yaml())
    assert trial_resources(_with_search(exp, trials_per_gpu=4)) == {"cpu": 1, "gpu": 0.25}
    assert trial_resources(_with_search(exp, trials_per_gpu=1)) == {"cpu": 1, "gpu": 1.0}
    cpu = _with_search(exp, trials_per_gpu=4).model_copy(
        update={"train": exp.train.model_copy(update={"device": "cpu"})})
    assert trial_resources(cpu) == {"cpu": 1}  # a CPU-trained search holds no GPU share


def test_trials_per_gpu_and_gpus_per_trial_are_one_choice(tiny_yaml: Callable[..., Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    f = tiny_yaml(name="both", search="trials_per_gpu: 2, gpus_per_trial: 0.5")
    assert main(["search", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trials_per_gpu or gpus_per_trial" in err and "0.5" in err
    g = tiny_yaml(name="zero", search="trials_per_gpu: 0")
    assert main(["search", str(g), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search.trials_per_gpu" in err


def test_train_device_cuda_without_cuda_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, wherever this runs
    assert main(["train", "shufflenet_v1_g3_x0_25", "--device", "cuda", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "argument --device: device cuda: CUDA is not available here" in err and "Traceback" not in err
    assert main(["train", "shufflenet_v1_g3_x0_25", "--device", "tpu"]) == 2
    assert "argument --device: device must be auto, cpu, cuda or cuda:N, got 'tpu'" in capsys.readouterr().err


def test_status_shows_gpu_figures_the_trials_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    study = optuna.create_study(study_name="gpu", storage=url, directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "mmacs"])
    study.set_user_attr("experiment", {"name": "gpu", "search": {"trials_per_gpu": 2, "workers": 4}})
    for i, (device, gpu, ips) in enumerate([("cuda:0", "0", 1000.0), ("cuda:0", "0", 3000.0),
                                            ("cuda:0", "1", 2000.0), ("cpu", None, 99.0)]):
        attrs = {"train_device": device, "images_per_second": ips, "arch_id": f"a{i}"}
        if gpu is not None:
            attrs |= {"train_gpu": gpu, "train_gpu_name": "NVIDIA H200"}
        study.add_trial(optuna.trial.create_trial(values=[0.5 + i / 10, 10.0 - i], user_attrs=attrs))
    assert main(["status", "gpu", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert ("GPU training: 3 trials on 2 GPU(s) (NVIDIA H200) (GPU 0: 2, GPU 1: 1); median 2,000 images/s per "
            "trial; up to 2 trial(s) at once per GPU (search.trials_per_gpu)") in out
    assert main(["status", "gpu", "--storage", url, "--json"]) == 0
    g = json.loads(capsys.readouterr().out)["gpu"]
    assert g["per_gpu"] == {"0": 2, "1": 1} and g["median_images_per_s"] == 2000.0  # the CPU trial left out


@needs_cuda
def test_cuda_zero_cost_naswot_and_fidelity(tiny_yaml: Callable[..., Path], tmp_path: Path) -> None:
    """Every zero-cost score, the NASWOT objective and `fidelity` (zero-cost forced on) on a GPU."""
    from nas.analysis.fidelity_run import train_entries
    from nas.pipeline.evaluate import evaluate
    from objectives.ranking import ReferenceSet, load_reference
    from search_spaces import make_arch

    arch = make_arch(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10)
    f = tiny_yaml(name="zc", objectives="[naswot, zico, meco, mmacs]", extra="zero_cost: true")
    res = evaluate(arch, load_experiment(f), run_dir=tmp_path)
    assert res.attrs["train_device"] == "cuda:0" and "train_gpu" in res.attrs
    assert all(math.isfinite(v) for v in res.attrs["zero_cost"].values()) and len(res.attrs["zero_cost"]) == 5
    assert all(math.isfinite(res.values[o]) for o in ("naswot", "zico", "meco"))
    ref = load_reference("shufflenet_v1_imagenet")
    two = ReferenceSet(ref.name, ref.source, ref.metric, tuple(sorted(ref.entries, key=lambda e: e.reference)[:2]),
                       ref.path)
    rows, _ = train_entries(load_experiment(tiny_yaml(name="fid")), two, cache_dir=tmp_path / "cache")
    assert len(rows) == 2 and all(0 <= r["accuracy"] <= 1 and len(r["zero_cost"]) == 5 for r in rows)


@needs_cuda
def test_cuda_deterministic_gives_equal_accuracies_twice() -> None:
    from objectives.accuracy import build_on, seed_everything, train_proxy
    from objectives.data import load_dataset
    from search_spaces import make_arch

    data = load_dataset("default", train_size=512, val_size=256, resolution=16)
    arch = make_arch(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10).for_proxy(
        in_channels=data.in_channels, num_classes=data.num_classes, resolution=data.resolution)
    runs = []
    for _ in range(2):
        seed_everything(0)
        runs.append(train_proxy(build_on(arch, "cuda"), data, TrainConfig(epochs=2, batch_size=64, deterministic=True)))
    assert runs[0].history == runs[1].history and runs[0].mean_train_loss == runs[1].mean_train_loss
