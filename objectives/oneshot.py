"""One-shot signal: train a weight-sharing supernet once, score candidates by inherited weights.

`train_supernet` trains a family's supernet (its registration's `supernet` module) on the proxy data
with paths drawn only from the budget (the space's own sampler under the search's `fits`), by one
of two samplers: `uniform` (one path per step, SPOS) or `sandwich` (the largest, the smallest and
a random path per step, the smaller two distilled in place from the largest's outputs, BigNAS).
Every step draws its path(s) and batch from (seed, step) alone, so a run killed and resumed from
its last checkpoint ends with the same weights as an uninterrupted one. Checkpoints are one
safetensors file (weights, optimizer state, step) named by a hash of space, data and recipe.

`score_path` re-estimates BatchNorm on seeded training batches (cumulative average, as SPOS does:
shared statistics fit no single path) and returns top-1 on the validation split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .accuracy import OPTIMIZERS, _lr_factor, evaluate_accuracy, recalibrate_bn, resolve_device, seed_everything
from .data import ProxyData

SAMPLERS = ("uniform", "sandwich")
GROUP_SHARING = ("shared", "separate")
#: bump when training changes what a supernet checkpoint holds (invalidates every key)
SUPERNET_VERSION = 1

Fits = Callable[[Any], bool]


@dataclass(frozen=True)
class OneShotConfig:
    """Supernet recipe and scoring. `checkpoint_every`, `threads` and `device` leave the result unchanged."""

    steps: int = 1000
    sampler: str = "uniform"
    #: how group counts share the 1x1 weights: "shared" (one dense weight, block diagonals) or "separate"
    group_sharing: str = "shared"
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 0.01
    warmup_steps: int = 10
    seed: int = 0
    checkpoint_every: int = 100
    bn_batches: int = 8
    bn_batch_size: int = 64
    threads: int | None = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "bn_batches", "bn_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"oneshot.{name} must be an integer >= 1, got {v!r}")
        for name in ("warmup_steps", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"oneshot.{name} must be an integer >= 0, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"oneshot.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.group_sharing not in GROUP_SHARING:
            raise ValueError(f"oneshot.group_sharing must be one of {', '.join(GROUP_SHARING)}, "
                             f"got {self.group_sharing!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"oneshot.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"oneshot.lr must be a number > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"oneshot.momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"oneshot.weight_decay must be >= 0, got {self.weight_decay!r}")

    def recipe(self) -> dict[str, Any]:
        """What changes the trained weights (the checkpoint key's part)."""
        d = asdict(self)
        for k in ("checkpoint_every", "threads", "device", "bn_batches", "bn_batch_size"):
            d.pop(k)
        return d


class SupernetUnavailable(ValueError):
    """The family has no supernet, or a checkpoint does not belong to this space/data/recipe."""


def supernet_module(space: Any) -> Any:
    """The family's supernet module, as its registration names it (`register_family(..., supernet=...)`)."""
    from search_spaces import get_family

    module = get_family(space.name).supernet
    if module is None:
        raise SupernetUnavailable(f"family {space.name!r} has no supernet (registered with supernet=...); "
                                  "the one-shot signal needs one")
    return module


def build(space: Any, data: ProxyData, group_sharing: str = "shared") -> nn.Module:
    """The family's supernet for `space`, shaped for the proxy data's input and classes (the stem rule
    of `Arch.for_proxy`). Built on the CPU, whatever the default device, so every device starts from the
    same weights; the caller moves it."""
    from search_spaces.network import SMALL_INPUT_MAX

    with torch.device("cpu"):
        return supernet_module(space).build_supernet(space, in_channels=data.in_channels,
                                                     num_classes=data.num_classes,
                                                     small_input=data.resolution <= SMALL_INPUT_MAX,
                                                     group_sharing=group_sharing)


def to_proxy(arch: Any, data: ProxyData) -> Any:
    """The deploy-shaped arch as the supernet's path (the one stem rule, `Arch.for_proxy`)."""
    return arch.for_proxy(in_channels=data.in_channels, num_classes=data.num_classes, resolution=data.resolution)


def supernet_key(space: Any, data_spec: dict[str, Any], config: OneShotConfig) -> str:
    """Hash of space, data and recipe (and torch's version): a checkpoint's name and identity."""
    blob = json.dumps({"family": space.name, "space": space.to_dict(), "data": data_spec, "recipe": config.recipe(),
                       "version": SUPERNET_VERSION, "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(root: str | Path, space: Any, key: str) -> Path:
    return Path(root) / f"{space.name}-{key}.safetensors"


# ------------------------------------------------------------------------------- path sampling


def sample_path(space: Any, fits: Fits, rng: random.Random, tries: int = 1000) -> Any:
    """A deploy-shaped arch the search itself could pick: the space's sampler under `fits`, redrawn
    while the sampler's fallback (the narrowest width when none fits) is still over budget."""
    from search_spaces import RandomTrial

    for _ in range(tries):
        arch = space.sample(RandomTrial(rng), fits)
        if fits(arch):
            return arch
    raise SupernetUnavailable(f"no architecture within the budget in {tries} draws of the space")


def budget_extremes(space: Any, fits: Fits, seed: int, size: Callable[[Any], float], pool: int = 256) -> tuple[Any, Any]:
    """(largest, smallest) architecture by `size` among the space's bounding archs that fit and a
    seeded pool of budget paths: the sandwich rule's two ends, both inside the budget."""
    rng = random.Random(f"extremes:{seed}")
    cands = [a for a in space.extremes() if fits(a)] + [sample_path(space, fits, rng) for _ in range(pool)]
    ranked = sorted(cands, key=lambda a: (size(a), a.arch_id))
    return ranked[-1], ranked[0]


def step_paths(space: Any, fits: Fits, config: OneShotConfig, step: int,
               ends: tuple[Any, Any] | None = None) -> list[Any]:
    """The deploy-shaped path(s) of `step`, from (seed, step) alone (sandwich: largest first)."""
    rng = random.Random(f"path:{config.seed}:{step}")
    one = sample_path(space, fits, rng)
    if config.sampler == "uniform":
        return [one]
    if ends is None:
        raise ValueError("the sandwich sampler needs the budget's (largest, smallest) paths")
    return [ends[0], ends[1], one]


def step_batch(n: int, config: OneShotConfig, step: int) -> torch.Tensor:
    """Training indices of `step`, from (seed, step) alone."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return torch.randint(0, n, (config.batch_size,), generator=gen, device="cpu")  # the generator's device


# ------------------------------------------------------------------------------- checkpoints


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"optim.{i}.{k}"] = (v if isinstance(v, torch.Tensor) else torch.tensor(v, device="cpu")).detach().cpu().contiguous()
    return out


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, step: int, meta: dict[str, str]) -> None:
    """Weights, optimizer state and step in one safetensors file, replaced atomically (a kill mid-write
    leaves the previous checkpoint)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={**meta, "step": str(step)})
    os.replace(tmp, path)


def read_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer | None, key: str) -> int:
    """Restore weights (and optimizer state); the step it was saved at. Refuses another key's file."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    if meta.get("key") != key:
        raise SupernetUnavailable(f"{path}: supernet checkpoint of key {meta.get('key')!r}, expected {key!r}")
    tensors = load_file(str(path))
    device = next(net.parameters()).device
    net.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if opt is not None:
        sd = opt.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v.to(device)
        opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
    return int(meta["step"])


# ------------------------------------------------------------------------------- training


@dataclass
class SupernetRun:
    path: Path
    key: str
    steps: int
    resumed_from: int  # 0: trained from scratch
    seconds: float
    mean_loss: float  # of the steps this run trained (the largest path's loss for sandwich)


def train_supernet(space: Any, fits: Fits, data: ProxyData, config: OneShotConfig, path: Path, key: str, *,
                   size: Callable[[Any], float], progress: Callable[[int, int], Any] | None = None,
                   on_step: Callable[[int, list[Any]], Any] | None = None) -> SupernetRun:
    """Train (or resume, from `path` when it holds this `key`) the supernet to `config.steps`.

    `size(arch)` orders paths for the sandwich rule (MACs); `on_step(step, deploy_archs)` sees each
    step's paths after it trained (tests, logs). Checkpoints every `checkpoint_every` steps and at the end.
    """
    import time

    device = resolve_device(config.device)
    prev_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else None):
            seed_everything(config.seed)
            net = build(space, data, config.group_sharing).to(device)
            opt = _optimizer(net, config)
            start = load_checkpoint(path, net, opt, key) if path.exists() else 0
            meta = {"key": key, "family": space.name, "steps": str(config.steps), "sampler": config.sampler,
                    "space": json.dumps(space.to_dict(), sort_keys=True), "recipe": json.dumps(config.recipe())}
            ends = budget_extremes(space, fits, config.seed, size) if config.sampler == "sandwich" else None
            x, y = data.train.tensors[0], data.train.tensors[1]
            t0 = time.perf_counter()
            losses: list[float] = []
            for step in range(start, config.steps):
                net.train()
                for g in opt.param_groups:
                    g["lr"] = config.lr * _lr_factor("cosine", step, config.steps, config.warmup_steps)
                archs = step_paths(space, fits, config, step, ends)
                idx = step_batch(len(y), config, step)
                xb, yb = x.index_select(0, idx).to(device), y.index_select(0, idx).to(device)
                opt.zero_grad(set_to_none=True)
                losses.append(_step_loss(net, [to_proxy(a, data) for a in archs], xb, yb))
                opt.step()
                if on_step is not None:
                    on_step(step, archs)
                done = step + 1
                if done % config.checkpoint_every == 0 or done == config.steps:
                    save_checkpoint(path, net, opt, done, meta)
                if progress is not None:
                    progress(done, config.steps)
            if start >= config.steps and progress is not None:
                progress(config.steps, config.steps)
    finally:
        torch.set_num_threads(prev_threads)
    return SupernetRun(path, key, config.steps, start, time.perf_counter() - t0,
                       sum(losses) / len(losses) if losses else float("nan"))


def _optimizer(net: nn.Module, config: OneShotConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.momentum > 0)


def _step_loss(net: nn.Module, paths: list[Any], xb: torch.Tensor, yb: torch.Tensor) -> float:
    """Backward of one step: cross-entropy for the first path; with more paths (sandwich), the rest
    learn the first's softened outputs (in-place distillation). Returns the first path's loss."""
    out = net(xb, paths[0])
    loss = F.cross_entropy(out, yb)
    value = float(loss.detach())
    if not math.isfinite(value):
        from .accuracy import TrainingDiverged

        raise TrainingDiverged(f"supernet loss became {value}: lower oneshot.lr")
    loss.backward()
    if len(paths) > 1:
        teacher = out.detach().softmax(1)
        for p in paths[1:]:
            F.cross_entropy(net(xb, p), teacher).backward()
    return value


# ------------------------------------------------------------------------------- scoring


def load_supernet(path: Path, space: Any, data: ProxyData, key: str, device: Any = "cpu") -> nn.Module:
    """The trained supernet from its final checkpoint (refused unless trained to its steps)."""
    meta = read_meta(path)
    if meta.get("step") != meta.get("steps"):
        raise SupernetUnavailable(f"{path}: supernet trained {meta.get('step')} of {meta.get('steps')} steps")
    sharing = json.loads(meta.get("recipe", "{}")).get("group_sharing", "shared")
    net = build(space, data, sharing).to(device)
    load_checkpoint(path, net, None, key)
    return net.eval()


def reestimate_bn(model: nn.Module, data: ProxyData, config: OneShotConfig) -> None:
    """Reset BN statistics and re-estimate them as a cumulative average over `bn_batches` training
    batches drawn from `config.seed` (the same batches for every candidate)."""
    gen = torch.Generator().manual_seed(config.seed)
    recalibrate_bn(model, data.train.tensors[0], config.bn_batches, config.bn_batch_size, gen)


def score_path(net: nn.Module, arch: Any, data: ProxyData, config: OneShotConfig) -> float:
    """Top-1 on the validation split of `arch`'s path (deploy-shaped) with inherited weights, after
    BatchNorm re-estimation on `bn_batches` training batches drawn from the seed."""
    prev = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)  # a contended host runs 1 thread far faster than 2
    try:
        model = net.extract(to_proxy(arch, data))
        reestimate_bn(model, data, config)
        return evaluate_accuracy(model, data.val.tensors[0], data.val.tensors[1])
    finally:
        torch.set_num_threads(prev)
