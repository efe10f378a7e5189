"""Zero-cost proxies: finite, deterministic and side-effect free (their speed: bench/zero_cost.py)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from objectives.zero_cost import (
    PROXIES,
    arch_zero_cost,
    grad_norm,
    meco,
    naswot,
    naswot_kernel,
    proxy_batch,
    synflow,
    zero_cost_scores,
    zico,
)
from search_spaces import build_model, preset

# (preset, in_channels): grey and colour proxy inputs at 32x32, 10 classes
CASES = [("shufflenet_v1_g3_x0_5", 1), ("shufflenet_v1_g8_x0_25", 3)]
BATCH = 32


def _batch(c: int, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, c, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _model(name: str, c: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model(preset(name).with_io(in_channels=c, num_classes=10, small_input=True))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as a search worker runs: timings stay sane on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name,c", CASES)
def test_proxies_finite_and_deterministic(name: str, c: int) -> None:
    arch = preset(name).with_io(in_channels=c, num_classes=10, small_input=True)
    x, y = _batch(c)
    model = _model(name, c)
    zero_cost_scores(model, x[:2], y[:2])  # warm-up (first-call allocations)
    times = {}
    first = {}
    for proxy in PROXIES:
        t0 = time.perf_counter()
        first.update(zero_cost_scores(model, x, y, proxies=[proxy]))
        times[proxy] = time.perf_counter() - t0
    print(f"\n{name} {c}x32x32 batch {BATCH}: " + ", ".join(f"{k}={first[k]:.4g} ({times[k]:.3f}s)" for k in PROXIES))
    assert set(first) == set(PROXIES)
    assert all(math.isfinite(v) for v in first.values()), first
    assert first["synflow"] > 0 and first["grad_norm"] > 0
    assert zero_cost_scores(model, x, y) == first  # bit-identical on a second run
    assert arch_zero_cost(arch, x, y) == first  # same seed, same initialisation, same scores
    # speed is a goal measured by bench/zero_cost.py, not a wall-clock assert here (a busy box is no bug)


def test_model_and_rng_untouched() -> None:
    model = _model(*CASES[0])
    x, y = _batch(1)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    zero_cost_scores(model, x, y)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG stream unaffected
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert all(p.grad is None for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_naswot_kernel_counts_every_relu() -> None:
    """The kernel covers the stem's nn.ReLU and every unit's functional torch.relu calls."""
    model = _model(*CASES[0])
    x, _ = _batch(1, n=4)
    k = naswot_kernel(model, x)
    # stem ReLU + per unit: ReLU after bn1 (at the unit's input resolution) and the output ReLU
    # (stride-2 units: on the branch only; the pooled shortcut is concatenated after it)
    arch = preset(CASES[0][0]).with_io(in_channels=1, num_classes=10, small_input=True)
    hw, ch = 32, arch.stem_channels
    units = ch * hw * hw
    for s in arch.stages:
        mid = int(s.mid_channels())
        for r in range(s.repeats):
            in_hw, hw = hw, hw // 2 if r == 0 else hw
            branch = s.out_channels - ch if r == 0 else s.out_channels
            units += mid * in_hw * in_hw + branch * hw * hw
            ch = s.out_channels
    assert torch.equal(torch.diagonal(k), torch.full((4,), float(units), dtype=torch.float64))
    assert torch.equal(k, k.T)


def test_naswot_duplicate_images_is_minus_inf() -> None:
    model = _model(*CASES[0])
    x, _ = _batch(1, n=4)
    x[1] = x[0]
    assert naswot(model, x) == -math.inf


def test_synflow_is_data_free_and_grad_norm_depends_on_labels() -> None:
    model = _model(*CASES[0])
    x, y = _batch(1)
    assert synflow(model, (1, 32, 32)) == zero_cost_scores(model, x * 0.5, y, proxies=["synflow"])["synflow"]
    assert grad_norm(model, x, y) != grad_norm(model, x, (y + 1) % 10)


def test_bad_input_raises_value_error() -> None:
    model = _model(*CASES[0])
    x, y = _batch(1, n=4)
    with pytest.raises(ValueError, match="unknown"):
        zero_cost_scores(model, x, y, proxies=["jacov"])
    with pytest.raises(ValueError, match="N >= 2"):
        naswot(model, x[:1])
    with pytest.raises(ValueError, match="targets"):
        grad_norm(model, x, y[:2])
    with pytest.raises(ValueError, match="input_shape_chw"):
        synflow(model, (32, 32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no ReLU"):
        naswot(nn.Sequential(nn.Flatten(), nn.Linear(1024, 10)), x)


def test_proxy_batch_from_real_data() -> None:
    from objectives.data import load_dataset

    data = load_dataset("default", train_size=200, val_size=50)
    x, y = proxy_batch(data, 16, seed=1)
    x2, _ = proxy_batch(data, 16, seed=1)
    assert x.shape == (16, data.in_channels, data.resolution, data.resolution) and torch.equal(x, x2)
    assert y.shape == (16,)
    scores = arch_zero_cost(preset("shufflenet_v1_g3_x0_5").with_io(in_channels=1, num_classes=10, small_input=True), x, y)
    assert all(math.isfinite(v) for v in scores.values())
    with pytest.raises(ValueError, match="batch size"):
        proxy_batch(data, 1)


# ---------------------------------------------------------------------------- ZiCo and MeCo by hand


def _tiny() -> nn.Sequential:
    """conv(1->3) relu conv(3->2) relu global-average-pool linear(2->3): no BN, so train and eval agree."""
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))


def _tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, 1, 5, 5, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])


def _forward(w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor,
             x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tiny network written out: both conv outputs (pre-ReLU) and the logits."""
    h1 = torch.nn.functional.conv2d(x, w1, padding=1)
    h2 = torch.nn.functional.conv2d(h1.clamp(min=0), w2, padding=1)
    pooled = h2.clamp(min=0).sum((2, 3)) / (h2.shape[2] * h2.shape[3])
    return h1, h2, pooled @ w3.T + b3


def test_zico_matches_a_hand_computation() -> None:
    net = _tiny()
    x, y = _tiny_batch()
    weights = [net[0].weight, net[2].weight, net[6].weight]
    halves = []
    for lo, hi in ((0, 3), (3, 6)):  # ZiCo's default: 2 splits of the batch
        ws = [w.detach().clone().requires_grad_(True) for w in weights]
        b3 = net[6].bias.detach()
        logits = _forward(*ws, b3, x[lo:hi])[2]
        loss = -(logits.log_softmax(1)[torch.arange(hi - lo), y[lo:hi]]).mean()
        halves.append(torch.autograd.grad(loss, ws))
    expected = 0.0
    for ga, gb in zip(*halves, strict=True):
        ga, gb = ga.double().flatten(), gb.double().flatten()
        mean_abs = (ga.abs() + gb.abs()) / 2
        std = (ga - gb).abs() / 2  # population std of two values
        keep = std > 0
        assert keep.sum() > 0
        expected += math.log(float((mean_abs[keep] / std[keep]).sum()))
    before = copy.deepcopy(net.state_dict())
    assert zico(net, x, y) == pytest.approx(expected, rel=1e-9)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # scored on a copy
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="zico: splits must be an integer >= 2"):
        zico(net, x, y, splits=1)


def _min_eig_corr(fmap: torch.Tensor) -> float:
    """Smallest eigenvalue of the Pearson correlation between the rows (channels) of a C x P map."""
    f = fmap.double()
    c = f - f.mean(1, keepdim=True)
    cov = c @ c.T
    d = cov.diagonal().sqrt()
    assert bool((d > 0).all())  # no dead channel: the plain formula applies
    return float(torch.linalg.eigvalsh(cov / (d[:, None] * d[None, :])).min())


def test_meco_matches_a_hand_computation() -> None:
    net = _tiny()
    x, _ = _tiny_batch()
    h1, h2, _ = _forward(net[0].weight.detach(), net[2].weight.detach(), net[6].weight.detach(),
                         net[6].bias.detach(), x[:1])  # MeCo: one image
    # the feature maps are the two ReLUs' outputs, channels x positions
    r1, r2 = h1[0].clamp(min=0).flatten(1), h2[0].clamp(min=0).flatten(1)
    expected = _min_eig_corr(r1) + _min_eig_corr(r2)
    assert 0 < _min_eig_corr(r1) < 1 and 0 < _min_eig_corr(r2) < 1  # distinct channels: a proper correlation
    assert meco(net, x) == pytest.approx(expected, rel=1e-9)
    assert meco(net, x[:1]) == meco(net, x)  # only the first image counts
    assert meco(net, x[1:2]) != pytest.approx(expected)


def test_meco_counts_a_dead_channel_as_uncorrelated() -> None:
    """A constant channel has no correlation: its row and column are 0, so the smallest eigenvalue is 0."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    x = torch.rand(1, 1, 5, 5) + 0.1  # positive: channel 2 is dead after the ReLU
    assert meco(net, x) == 0.0
    with pytest.raises(ValueError, match="calls no ReLU"):
        meco(nn.Sequential(nn.Conv2d(1, 2, 1)), x)


def test_meco_map_with_fewer_positions_than_channels_adds_zero() -> None:
    """C channels over P <= C positions: the centred C x C correlation has rank < C, so lambda_min is 0."""
    torch.manual_seed(2)
    wide = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.ReLU(),
                         nn.Conv2d(3, 9, 1, bias=False), nn.ReLU())  # 9 channels over 3 x 3 positions
    x = torch.randn(1, 1, 3, 3)
    expected = _min_eig_corr(wide[0](x)[0].detach().clamp(min=0).flatten(1))  # the first ReLU only
    assert expected > 1e-6
    assert meco(wide, x) == pytest.approx(expected, rel=1e-9)
