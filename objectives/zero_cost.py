"""Zero-cost proxies: score an untrained network from one batch, in well under a second.

They rank candidates before (or instead of) proxy training. All three are "higher is
better" and are computed on a deep copy, so the caller's model (weights, BN statistics,
gradients) is never changed.

- `synflow` (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al. 2021): data-free
  "synaptic flow" of the all-ones input through |weights|.
- `naswot` (Mellor et al. 2021, "NAS without training"): how differently the ReLUs
  partition a batch, as log|det| of a Hamming-similarity kernel of activation codes.
- `grad_norm` (Abdelfattah et al. 2021): sum of the L2 norms of the cross-entropy
  gradients of the conv and linear weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from search_spaces import ArchBase, build_model

#: Every proxy under one signature, `(model, images, labels) -> float`, higher is better.
ProxyFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


# ---------------------------------------------------------------------------- synflow


def synflow(model: nn.Module, input_shape_chw: tuple[int, int, int]) -> float:
    """SynFlow: sum over parameters of |theta * dR/dtheta|, R = sum(f_|theta|(ones)).

    Runs on a float64 deep copy with every parameter replaced by its absolute value (the
    "sign-abs" trick: the network becomes a positive linear-ish map, so R measures how
    much signal each weight carries end to end). BatchNorm is in eval mode: with one
    constant image, batch statistics would have (near) zero variance and divide by it;
    eval-mode BN with fresh statistics is a positive affine map, as the proxy intends.
    float64 keeps R from overflowing in deep networks.
    """
    c, h, w = _check_chw(input_shape_chw)
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    out = net(torch.ones(1, c, h, w, dtype=torch.float64))
    torch.sum(out).backward()
    total = 0.0
    for p in net.parameters():
        if p.grad is not None:
            total += float((p.detach() * p.grad).abs().sum())
    return total


# ---------------------------------------------------------------------------- naswot


#: ReLU entry points whose inputs give the activation codes (module, functional, in-place).
_RELUS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class _ReluKernel(TorchFunctionMode):
    """Accumulates the NASWOT kernel from the input of every ReLU call, however it is spelled.

    ShuffleNet units call `torch.relu` functionally (and on `y + x` after the residual
    add), while the stem uses `nn.ReLU`; hooks on `nn.ReLU` modules would miss every unit,
    and hooks on BatchNorm outputs would record the linear depthwise BN (bn2, which has no
    ReLU) and miss the residual add before the unit's ReLU. Intercepting the ReLU call
    itself records exactly the pre-activation sign pattern that the ReLUs see, for any
    model built from standard ReLUs (`nn.ReLU` dispatches to `F.relu`).

    The kernel is summed layer by layer (codes of a whole network are ~10^6 units per
    image; concatenating them costs far more memory traffic than the products).
    """

    def __init__(self) -> None:
        super().__init__()
        self.kernel: torch.Tensor | None = None
        self.units = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _RELUS and args and isinstance(args[0], torch.Tensor):
            c = (args[0].detach() > 0).flatten(1).to(torch.float32)
            # C C^T + (1-C)(1-C)^T = 2 C C^T - s_i - s_j + D, with s the per-image count of active units;
            # float32 is exact here (integers below 2^24 per layer), the running sum is float64
            s = c.sum(1, dtype=torch.float64)
            k = 2.0 * (c @ c.T).to(torch.float64) - s[:, None] - s[None, :] + c.shape[1]
            self.kernel = k if self.kernel is None else self.kernel + k
            self.units += c.shape[1]
        return func(*args, **(kwargs or {}))


def naswot_kernel(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """K[i, j] = number of ReLU units on which images i and j agree (N x N, float64).

    BatchNorm uses batch statistics (train mode, as in Mellor et al.) on a deep copy, so
    the caller's running statistics are untouched.
    """
    net = copy.deepcopy(model).train()
    mode = _ReluKernel()
    with torch.no_grad(), mode:
        net(batch)
    if mode.kernel is None:
        raise ValueError(f"naswot: {type(model).__name__} calls no ReLU, so it has no activation codes")
    return mode.kernel


def naswot(model: nn.Module, batch: torch.Tensor) -> float:
    """NASWOT score: log|det K|, K = C C^T + (1-C)(1-C)^T over binary ReLU codes C.

    K[i, j] counts the ReLUs on which images i and j agree (units minus Hamming
    distance); networks that separate the batch into distinct linear regions score
    higher. Needs at least two distinct images; identical codes give -inf.
    """
    if batch.dim() != 4 or batch.shape[0] < 2:
        raise ValueError(f"naswot: batch must be N x C x H x W with N >= 2, got shape {tuple(batch.shape)}")
    _sign, logabsdet = torch.linalg.slogdet(naswot_kernel(model, batch))
    return float(logabsdet)


#: Draws averaged by `naswot_mean`. One draw's verdict on close pairs flips with the seed: on the
#: paper's 6 shuffle/no-shuffle pairs single draws got 5, 3, 6, 4, 4, 4, 5, 4 of 6 right (seeds 0-7);
#: the mean of 4 draws got 6 and 5 of 6 on two disjoint seed groups (README, "Proxy fidelity").
NASWOT_DRAWS = 4


def naswot_mean(arch: ArchBase, images: torch.Tensor, *, seed: int = 0, draws: int = NASWOT_DRAWS,
                batch: int = 64) -> float:
    """Mean NASWOT of the proxy-shaped `arch` over `draws` draws: draw d initialises with seed + d
    and reads images [d*batch, (d+1)*batch) (wrapping round when there are fewer images)."""
    if draws < 1 or batch < 2 or len(images) < 2:
        raise ValueError(f"naswot_mean: need draws >= 1, batch >= 2 and >= 2 images, got {draws}, {batch}, {len(images)}")
    n = min(batch, len(images))
    scores = []
    for d in range(draws):
        idx = torch.arange(d * n, (d + 1) * n) % len(images)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + d)
            model = build_model(arch)
        scores.append(naswot(model, images[idx].float()))
    return float(sum(scores) / len(scores))


# ---------------------------------------------------------------------------- grad_norm


def grad_norm(model: nn.Module, batch: torch.Tensor, targets: torch.Tensor) -> float:
    """Sum of ||dL/dW||_2 over conv and linear weights, L = cross-entropy on the batch.

    As in Abdelfattah et al. 2021, only conv/linear weights count (BN affine parameters
    would add a near-constant offset). Train-mode BN on a deep copy.
    """
    if targets.dim() != 1 or targets.shape[0] != batch.shape[0]:
        raise ValueError(
            f"grad_norm: targets must be 1-D with one label per image ({batch.shape[0]}), got {tuple(targets.shape)}"
        )
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(batch), targets.long()).backward()
    total = 0.0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
            total += float(m.weight.grad.norm(2))
    return total


# ---------------------------------------------------------------------------- registry


def _synflow_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return synflow(model, tuple(images.shape[1:]))  # type: ignore[arg-type]


def _naswot_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return naswot(model, images)


def _grad_norm_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return grad_norm(model, images, labels)


#: name -> proxy under the common signature `(model, images, labels) -> float`.
PROXIES: dict[str, ProxyFn] = {
    "synflow": _synflow_proxy,
    "naswot": _naswot_proxy,
    "grad_norm": _grad_norm_proxy,
}


def zero_cost_scores(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    proxies: tuple[str, ...] | list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """All (or the named) proxies for one model and one batch, deterministically.

    The global RNG is seeded inside a forked RNG state, so the caller's random stream
    is unaffected and any stochastic layer sees the same draws every call.
    """
    names = list(PROXIES) if proxies is None else list(proxies)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(f"zero-cost proxies {unknown} are unknown; known: {', '.join(PROXIES)}")
    if images.dim() != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    images = images.float()
    scores: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for name in names:
            torch.manual_seed(seed)
            scores[name] = PROXIES[name](model, images, labels)
    return scores


def arch_zero_cost(
    arch: ArchBase,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    proxies: tuple[str, ...] | list[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Proxies for an `Arch` (the body at the proxy input), its weights initialised from `seed`.

    The initialisation is part of what the proxies measure, so the seed fixes it too.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch)
    return zero_cost_scores(model, images, labels, proxies=proxies, seed=seed)


def proxy_batch(data: Any, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch of `n` training images and labels from a `ProxyData` (seeded)."""
    x, y = data.train.tensors[0], data.train.tensors[1]
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= len(y):
        raise ValueError(f"zero-cost batch size must be an integer in [2, {len(y)}] (training images), got {n!r}")
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[pick], y[pick]


def _check_chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"synflow: input_shape_chw must be three positive ints (C, H, W), got {tuple(shape)}")
    return shape[0], shape[1], shape[2]


def finite(scores: dict[str, float]) -> bool:
    """True when every score is a finite number (naswot is -inf on duplicate images)."""
    return all(math.isfinite(v) for v in scores.values())
