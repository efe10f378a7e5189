"""train.device / train.amp: the CPU path everywhere, the CUDA path where a GPU is present.

The CUDA tests skip with the reason on a machine without a CUDA device (this project's CI
machine has none); they run as they are on one that has.
"""

from __future__ import annotations

import math
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
