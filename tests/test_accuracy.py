"""objectives.accuracy: determinism, report/stop, divergence, learning, config validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from objectives.accuracy import TrainConfig, TrainingDiverged, TrainResult, seed_everything, train_proxy
from objectives.data import ProxyData, load_dataset


@pytest.fixture(scope="module")
def small() -> ProxyData:
    return load_dataset("default", train_size=600, val_size=200, resolution=16)


@pytest.fixture(scope="module")
def medium() -> ProxyData:
    return load_dataset("default", train_size=2000, val_size=500)


def tiny_cnn(in_ch: int = 1, classes: int = 10, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(2 * width, classes),
    )


def _run(data: ProxyData, cfg: TrainConfig, seed: int = 0, **kw) -> TrainResult:
    seed_everything(seed)
    return train_proxy(tiny_cnn(), data, cfg, **kw)


def test_same_seed_same_accuracy(small: ProxyData) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=7)
    a = _run(small, cfg)
    b = _run(small, cfg)
    assert a.accuracy == b.accuracy and a.history == b.history and a.train_loss == b.train_loss
    assert a.epochs_run == 2 and not a.stopped_early
    assert 0.0 <= a.accuracy <= 1.0 and a.best_accuracy == max(acc for _, acc in a.history)
    assert a.images_per_second > 0 and a.images_seen == 2 * 600
    # a different shuffling seed gives a different run
    c = _run(small, TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=8))
    assert c.train_loss != a.train_loss


def test_global_state_restored(small: ProxyData) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run_model = tiny_cnn()
    torch.manual_seed(123)
    train_proxy(_run_model, small, TrainConfig(epochs=1, max_batches_per_epoch=2, threads=2))
    assert torch.equal(torch.rand(3), expected)  # the trainer forked the global RNG
    assert torch.get_num_threads() == 1


def test_report_true_stops_after_first_epoch(small: ProxyData) -> None:
    seen: list[tuple[int, float]] = []

    def report(epoch: int, acc: float) -> bool:
        seen.append((epoch, acc))
        return True

    r = _run(small, TrainConfig(epochs=5, max_batches_per_epoch=3), report=report)
    assert r.stopped_early and r.epochs_run == 1 and len(seen) == 1 and seen[0][0] == 1
    assert r.history == seen


def test_report_false_and_progress(small: ProxyData) -> None:
    epochs: list[int] = []
    ticks: list[tuple[int, int]] = []
    r = _run(small, TrainConfig(epochs=2, batch_size=100, max_batches_per_epoch=4),
             report=lambda e, a: epochs.append(e) or False, progress=lambda d, t: ticks.append((d, t)))
    assert epochs == [1, 2] and not r.stopped_early
    assert ticks == [(i, 8) for i in range(1, 9)]


def test_nan_loss_raises_training_diverged(small: ProxyData) -> None:
    with pytest.raises(TrainingDiverged) as exc:
        _run(small, TrainConfig(epochs=2, lr=1e30, batch_size=64))
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("loss became ") and "epoch 1, batch " in msg and "lr=" in msg
    assert "lower the learning rate" in msg

    class NanOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16 * 16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * float("nan")

    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch 1 \(lr=0.05\)"):
        train_proxy(NanOut(), small, TrainConfig(schedule="constant"))


def test_learns_above_chance(medium: ProxyData) -> None:
    seed_everything(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )
    r = train_proxy(model, medium, TrainConfig(epochs=2, batch_size=64, lr=0.05))
    assert r.epochs_run == 2 and [e for e, _ in r.history] == [1, 2]
    assert r.accuracy > 0.6, r  # chance is 0.1; about 0.9 in practice


def test_adamw_and_schedules(small: ProxyData) -> None:
    for sched in ("linear", "constant"):
        r = _run(small, TrainConfig(epochs=1, optimizer="adamw", lr=3e-3, weight_decay=1e-4, schedule=sched,
                                    max_batches_per_epoch=3, label_smoothing=0.1))
        assert r.epochs_run == 1 and r.images_seen == 3 * 128


@pytest.mark.parametrize(("kw", "needle"), [
    ({"epochs": 0}, "TrainConfig.epochs must be >= 1, got 0"),
    ({"batch_size": 1.5}, "TrainConfig.batch_size must be an integer"),
    ({"optimizer": "lamb"}, "TrainConfig.optimizer must be one of sgd, adamw, got 'lamb'"),
    ({"lr": 0.0}, "TrainConfig.lr must be > 0.0"),
    ({"lr": float("nan")}, "TrainConfig.lr must be a number"),
    ({"schedule": "step"}, "TrainConfig.schedule must be one of cosine, linear, constant"),
    ({"momentum": 1.0}, "TrainConfig.momentum must be < 1"),
    ({"label_smoothing": -0.1}, "TrainConfig.label_smoothing must be >= 0.0"),
    ({"threads": 0}, "TrainConfig.threads must be >= 1"),
    ({"max_batches_per_epoch": 0}, "TrainConfig.max_batches_per_epoch must be >= 1"),
])
def test_config_validation(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        TrainConfig(**kw)
    assert needle in str(exc.value)


def test_config_round_trip() -> None:
    cfg = TrainConfig(epochs=2, optimizer="adamw", lr=1e-3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"epochz": 3})


def test_warmup_then_schedule() -> None:
    from objectives.accuracy import _lr_factor

    f = [_lr_factor("cosine", s, 20, warmup=4) for s in range(20)]
    assert f[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # linear ramp, never 0
    assert f[4] == pytest.approx(1.0) and f[-1] < 0.05 and all(a >= b for a, b in zip(f[4:], f[5:], strict=False))
    assert [_lr_factor("cosine", s, 20) for s in range(3)][0] == 1.0  # no warm-up: unchanged


def test_bn_recalibration_rewrites_running_stats(small: ProxyData) -> None:
    from objectives.accuracy import recalibrate_bn

    seed_everything(0)
    m = tiny_cnn()
    bn = m[1]
    bn.running_mean.fill_(5.0)
    recalibrate_bn(m, small.train.tensors[0], batches=4, batch_size=64, gen=torch.Generator().manual_seed(0))
    assert float(bn.running_mean.abs().max()) < 5.0 and bn.momentum == 0.1  # momentum restored
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=0, bn_recalibrate=3, warmup_steps=2)
    r1, r2 = _run(small, cfg), _run(small, cfg)
    assert r1.accuracy == r2.accuracy and r1.mean_train_loss == r2.mean_train_loss  # still deterministic
    assert r1.mean_train_loss > 0


def test_divergence_checked_at_an_interval_names_the_same_batch(small: ProxyData,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An accelerator reads the losses every CHECK_EVERY steps (no host sync per step); the error still
    names the first non-finite batch, its loss and its learning rate, as the per-step check did."""
    import objectives.accuracy as acc

    def message(every: int) -> str:
        monkeypatch.setitem(acc.CHECK_EVERY, "cpu", every)
        with pytest.raises(TrainingDiverged) as exc:
            _run(small, TrainConfig(epochs=2, lr=1e30, batch_size=64, schedule="linear"))
        return str(exc.value)

    per_step, windowed = message(1), message(4)
    # batch 2 sits inside the first window of 4: the windowed check must look back to it
    assert per_step.startswith("loss became nan at epoch 1, batch 2 (lr=9.5e+29)")
    assert windowed == per_step


def test_deterministic_setting_gives_equal_accuracies_twice(small: ProxyData) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=3, deterministic=True, bn_recalibrate=1)
    a, b = _run(small, cfg), _run(small, cfg)
    assert a.history == b.history and a.mean_train_loss == b.mean_train_loss
    assert len(a.history) == 2 and a.images_seen == 2 * 600


def test_no_cuda_generator_is_reseeded(small: ProxyData, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fork_rng(devices=[])` then `torch.manual_seed` reseeded every CUDA generator of the caller
    (torch.manual_seed calls torch.cuda.manual_seed_all); the trainer and the proxies seed only the
    generators they forked."""
    from objectives.zero_cost import arch_zero_cost, naswot_mean, proxy_batch
    from search_spaces import make_arch

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    assert torch.manual_seed(5) is not None and calls == [5]  # the trap sees torch.manual_seed
    calls.clear()
    train_proxy(tiny_cnn(), small, TrainConfig(epochs=1, max_batches_per_epoch=2))
    arch = make_arch(groups=2, width=0.25, repeats=(1, 1, 1), num_classes=10).for_proxy(
        in_channels=small.in_channels, num_classes=small.num_classes, resolution=small.resolution)
    x, y = proxy_batch(small, 8)
    arch_zero_cost(arch, x, y, proxies=["naswot", "grad_norm"])
    naswot_mean(arch, x, draws=1, batch=8)
    assert calls == []
