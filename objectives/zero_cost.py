"""Zero-cost proxies: score an untrained network from one batch, in well under a second.

They rank candidates before (or instead of) proxy training. All are "higher is better" and
are computed on a deep copy, so the caller's model (weights, BN statistics, gradients) is
never changed. Every tensor a proxy makes lives on the device of the images it is given.

- `synflow` (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al. 2021): data-free
  "synaptic flow" of the all-ones input through |weights|.
- `naswot` (Mellor et al. 2021, "NAS without training"): how differently the ReLUs
  partition a batch, as log|det| of a Hamming-similarity kernel of activation codes.
- `grad_norm` (Abdelfattah et al. 2021): sum of the L2 norms of the cross-entropy
  gradients of the conv and linear weights.
- `zico` (Li et al., ICLR 2023, "ZiCo: zero-shot NAS via inverse coefficient of variation on
  gradients"): per conv/linear layer, log of the sum over weights of mean |gradient| / gradient
  standard deviation across the batch's splits (2, the paper's default); summed over layers.
- `meco` (Jiang et al., NeurIPS 2023, "MeCo: zero-shot NAS with one data and single forward
  pass via minimum eigenvalue of correlation"): sum over the ReLUs of the smallest eigenvalue
  of the channel correlation matrix of the activation map of one image.
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

from search_spaces import ArchBase

from .accuracy import build_on, seeded

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
    out = net(torch.ones(1, c, h, w, dtype=torch.float64, device=_device_of(net)))
    torch.sum(out).backward()
    terms = [(p.detach() * p.grad).abs().sum() for p in net.parameters() if p.grad is not None]
    return float(sum(torch.stack(terms).tolist())) if terms else 0.0  # one host sync, summed as before


# ---------------------------------------------------------------------------- naswot


#: ReLU entry points whose inputs give the activation codes (module, functional, in-place).
_RELUS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class _ReluTap(TorchFunctionMode):
    """Hands the input of every ReLU call, however it is spelled, to `see` (NASWOT's codes, MeCo's maps).

    ShuffleNet units call `torch.relu` functionally (and on `y + x` after the residual
    add), while the stem uses `nn.ReLU`; hooks on `nn.ReLU` modules would miss every unit,
    and hooks on BatchNorm outputs would record the linear depthwise BN (bn2, which has no
    ReLU) and miss the residual add before the unit's ReLU. Intercepting the ReLU call
    itself sees exactly the pre-activations that the ReLUs see, for any model built from
    standard ReLUs (`nn.ReLU` dispatches to `F.relu`).
    """

    def __init__(self, see: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.see = see
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _RELUS and args and isinstance(args[0], torch.Tensor):
            self.see(args[0].detach())  # before the call: an in-place ReLU overwrites its input
            self.calls += 1
        return func(*args, **(kwargs or {}))


def naswot_kernel(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """K[i, j] = number of ReLU units on which images i and j agree (N x N, float64).

    BatchNorm uses batch statistics (train mode, as in Mellor et al.) on a deep copy, so
    the caller's running statistics are untouched. The kernel is summed layer by layer (codes
    of a whole network are ~10^6 units per image; concatenating them costs far more memory
    traffic than the products).
    """
    parts: list[torch.Tensor] = []

    def see(x: torch.Tensor) -> None:
        c = (x > 0).flatten(1).to(torch.float32)
        # C C^T + (1-C)(1-C)^T = 2 C C^T - s_i - s_j + D, with s the per-image count of active units;
        # float32 is exact here (integers below 2^24 per layer), the running sum is float64
        s = c.sum(1, dtype=torch.float64)
        k = 2.0 * (c @ c.T).to(torch.float64) - s[:, None] - s[None, :] + c.shape[1]
        parts[:] = [k if not parts else parts[0] + k]

    net = copy.deepcopy(model).train()
    with torch.no_grad(), _ReluTap(see):
        net(batch)
    if not parts:
        raise ValueError(f"naswot: {type(model).__name__} calls no ReLU, so it has no activation codes")
    return parts[0]


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
        idx = torch.arange(d * n, (d + 1) * n, device=images.device) % len(images)
        with seeded(seed + d):
            model = build_on(arch, images.device)
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
    norms = [m.weight.grad.norm(2) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None]
    return float(sum(torch.stack(norms).tolist())) if norms else 0.0  # one host sync


# ---------------------------------------------------------------------------- zico

#: ZiCo's default: the statistics of each gradient over 2 splits of the batch (Li et al. 2023).
ZICO_SPLITS = 2


def zico(model: nn.Module, batch: torch.Tensor, targets: torch.Tensor, *, splits: int = ZICO_SPLITS) -> float:
    """ZiCo: sum over conv/linear layers of log(sum over weights of mean|g| / std(g)).

    g is a weight's cross-entropy gradient on each of `splits` consecutive parts of the batch
    (train-mode BN on a deep copy); mean and standard deviation (population, ddof 0) are taken
    across the parts. Weights whose gradient does not vary are left out (0/0), and so is a
    layer whose sum is 0 (log 0), as in the paper's definition. High mean and low variance of
    the gradients predict fast, stable training.
    """
    if not isinstance(splits, int) or isinstance(splits, bool) or splits < 2:
        raise ValueError(f"zico: splits must be an integer >= 2, got {splits!r}")
    if batch.dim() != 4 or batch.shape[0] < splits or targets.shape[:1] != batch.shape[:1]:
        raise ValueError(f"zico: need an N x C x H x W batch with N >= splits ({splits}) and one label per image, "
                         f"got shapes {tuple(batch.shape)} and {tuple(targets.shape)}")
    net = copy.deepcopy(model).train()
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    n = batch.shape[0]
    for k in range(splits):
        lo, hi = k * n // splits, (k + 1) * n // splits
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(batch[lo:hi]), targets[lo:hi].long()).backward()
        for acc, m in zip(grads, layers, strict=True):
            if m.weight.grad is not None:
                acc.append(m.weight.grad.detach().flatten().to(torch.float64))
    sums = []
    for acc in grads:
        if len(acc) == splits:
            g = torch.stack(acc)
            std = g.std(0, correction=0)
            keep = std != 0
            sums.append((g.abs().mean(0)[keep] / std[keep]).sum())
    values = torch.stack(sums).tolist() if sums else []  # one host sync
    return float(sum(math.log(v) for v in values if v > 0))


# ---------------------------------------------------------------------------- meco


def meco(model: nn.Module, batch: torch.Tensor) -> float:
    """MeCo: sum over the network's ReLUs of the smallest eigenvalue of the C x C Pearson
    correlation between the channels of the ReLU's output feature map for one image (the
    batch's first).

    The feature maps are the activations (post-ReLU), as in the paper's analysis of ReLU
    networks: a conv output is linear in its C_in * k * k inputs, so its correlation matrix is
    singular whenever it has more channels than that. One image and one forward pass, as in
    the paper. Eval-mode BN on a deep copy: with one image, batch statistics of a 1 x 1 feature
    map (small proxy inputs reach one) are undefined. A channel that does not vary (a dead
    ReLU) has no correlation: its entries count as 0, as in the paper's code, so dead channels
    lower the score. A map with no more positions than channels adds exactly 0: its centred
    correlation matrix is singular (a solver would return +-1e-15 noise at O(C^3) cost).
    """
    if batch.dim() != 4 or batch.shape[0] < 1:
        raise ValueError(f"meco: batch must be N x C x H x W with N >= 1, got shape {tuple(batch.shape)}")
    mins: list[torch.Tensor] = []

    def see(x: torch.Tensor) -> None:
        if x.dim() != 4:
            return  # a ReLU on vectors (a classifier head) has no channels x positions map
        fmap = x[0].clamp(min=0).flatten(1).to(torch.float64)  # the ReLU's output: channels x positions
        if fmap.shape[1] <= fmap.shape[0]:
            return
        corr = torch.atleast_2d(torch.corrcoef(fmap))
        mins.append(torch.linalg.eigvalsh(torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0))[0])

    net = copy.deepcopy(model).eval()
    tap = _ReluTap(see)
    with torch.no_grad(), tap:
        net(batch[:1])
    if not tap.calls:
        raise ValueError(f"meco: {type(model).__name__} calls no ReLU, so it has no feature maps")
    return float(torch.stack(mins).sum()) if mins else 0.0


# ---------------------------------------------------------------------------- registry


def _synflow_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return synflow(model, tuple(images.shape[1:]))  # type: ignore[arg-type]


def _naswot_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return naswot(model, images)


def _grad_norm_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return grad_norm(model, images, labels)


def _zico_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return zico(model, images, labels)


def _meco_proxy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return meco(model, images)


#: name -> proxy under the common signature `(model, images, labels) -> float`.
PROXIES: dict[str, ProxyFn] = {
    "synflow": _synflow_proxy,
    "naswot": _naswot_proxy,
    "grad_norm": _grad_norm_proxy,
    "zico": _zico_proxy,
    "meco": _meco_proxy,
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

    The CPU's and the images' device's generators are seeded inside a forked state, so the
    caller's random streams are unaffected and any stochastic layer sees the same draws every call.
    """
    names = list(PROXIES) if proxies is None else list(proxies)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise ValueError(f"zero-cost proxies {unknown} are unknown; known: {', '.join(PROXIES)}")
    if images.dim() != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    images = images.float()
    scores: dict[str, float] = {}
    for name in names:
        with seeded(seed, images.device):
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
    """Proxies for an `Arch` (the body at the proxy input), its weights initialised from `seed`
    (on the CPU, so every device scores the same network) on the images' device.

    The initialisation is part of what the proxies measure, so the seed fixes it too.
    """
    with seeded(seed):
        model = build_on(arch, images.device)
    return zero_cost_scores(model, images, labels, proxies=proxies, seed=seed)


def proxy_batch(data: Any, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch of `n` training images and labels from a `ProxyData` (seeded)."""
    x, y = data.train.tensors[0], data.train.tensors[1]
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= len(y):
        raise ValueError(f"zero-cost batch size must be an integer in [2, {len(y)}] (training images), got {n!r}")
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed), device="cpu")[:n].to(x.device)
    return x[pick], y[pick]


def _check_chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise ValueError(f"synflow: input_shape_chw must be three positive ints (C, H, W), got {tuple(shape)}")
    return shape[0], shape[1], shape[2]


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def finite(scores: dict[str, float]) -> bool:
    """True when every score is a finite number (naswot is -inf on duplicate images)."""
    return all(math.isfinite(v) for v in scores.values())
