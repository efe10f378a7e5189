"""Proxy trainer: a few seeded, deterministic epochs on in-memory tensors.

`train_proxy(model, data, config, report)` trains `model` on `data.train`, measures top-1
on `data.val` after each epoch and hands it to `report(epoch, accuracy)`; a `True` answer
stops training (pruning). A non-finite loss raises `TrainingDiverged` with one line.

Determinism: build the model right after `seed_everything(seed)`; the trainer forks the RNG
of the one device it trains on (and the CPU's), seeds it with `config.seed`, shuffles with its
own seeded generator and sets `config.threads`, restoring all of these on exit. On the CPU the
same seed, model construction and thread count give identical accuracies. On CUDA the default
is speed (cuDNN benchmarking, bf16 autocast, channels_last, no host sync per step);
`deterministic=True` is the setting whose results are promised equal run to run (deterministic
algorithms, `CUBLAS_WORKSPACE_CONFIG`, no cuDNN benchmarking).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from search_spaces import ArchBase, build_model

from .data import ProxyData

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "build_on",
    "evaluate_accuracy",
    "resolve_device",
    "recalibrate_bn",
    "seed_everything",
    "seeded",
    "train_proxy",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "linear", "constant")

ReportFn = Callable[[int, float], "bool | None"]
ProgressFn = Callable[[int, int], Any]


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto") -> torch.device:
    """"auto" -> the first CUDA device when there is one, else the CPU; "cpu", "cuda", "cuda:N" as
    named. Asking for CUDA where there is none is a ValueError (one line), not a silent CPU run."""
    if not isinstance(spec, str) or not _DEVICE.match(spec):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {spec}: CUDA is not available here (torch {torch.__version__}"
                         f"{', a CPU-only build' if torch.version.cuda is None else ''}); use device auto or cpu")
    dev = torch.device(spec if ":" in spec else "cuda:0")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; a search records the trial as failed."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (call before building the model)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_on(arch: ArchBase, device: torch.device | str) -> nn.Module:
    """`build_model(arch)` initialised on the CPU from the current RNG state, then moved to `device`:
    the same initial weights whatever the device (CUDA's generator would draw others)."""
    with torch.device("cpu"):
        model = build_model(arch)
    return model.to(device)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Fork and seed the CPU generator and that of `device` only, restoring both on exit.

    `fork_rng(devices=[])` followed by `torch.manual_seed` would reseed every CUDA generator of
    the caller without restoring them; this seeds exactly the generators it forked.
    """
    dev = torch.device(device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for i in cuda:
            torch.cuda.default_generators[i].manual_seed(seed)
        yield


def _num(name: str, value: Any, *, low: float | None = None, low_open: bool = False, high: float | None = None,
         integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ValueError(f"TrainConfig.{name} must be {kind}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"TrainConfig.{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"TrainConfig.{name} must be <= {high}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How a proxy is trained. Validated on construction (ValueError naming field, rule, value)."""

    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    seed: int = 0
    threads: int | None = 1
    max_batches_per_epoch: int | None = None
    eval_batch_size: int = 1000
    nesterov: bool = False
    #: where the caller puts the model ("auto": CUDA when present); the trainer follows the model
    device: str = "auto"
    #: mixed precision on CUDA: bf16 autocast where the GPU supports it, else float16 with gradient
    #: scaling; no effect on the CPU
    amp: bool = True
    #: CUDA results equal run to run (deterministic algorithms, CUBLAS_WORKSPACE_CONFIG, no cuDNN
    #: benchmarking) at some speed; False: fastest. The CPU path is deterministic either way
    deterministic: bool = False
    warmup_steps: int = 0  # linear warm-up from 0 before the schedule (counted in SGD steps)
    bn_recalibrate: int = 0  # training batches that re-estimate BN statistics before each evaluation

    def __post_init__(self) -> None:
        _num("epochs", self.epochs, low=1, integer=True)
        _num("batch_size", self.batch_size, low=1, integer=True)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _num("lr", self.lr, low=0.0, low_open=True)
        _num("momentum", self.momentum, low=0.0, high=1.0)
        if self.momentum >= 1.0:
            raise ValueError(f"TrainConfig.momentum must be < 1, got {self.momentum!r}")
        _num("weight_decay", self.weight_decay, low=0.0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _num("label_smoothing", self.label_smoothing, low=0.0, high=1.0)
        if self.label_smoothing >= 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be < 1, got {self.label_smoothing!r}")
        _num("seed", self.seed, low=0, integer=True)
        if self.threads is not None:
            _num("threads", self.threads, low=1, integer=True)
        if self.max_batches_per_epoch is not None:
            _num("max_batches_per_epoch", self.max_batches_per_epoch, low=1, integer=True)
        _num("eval_batch_size", self.eval_batch_size, low=1, integer=True)
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(f"TrainConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for flag in ("amp", "deterministic"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"TrainConfig.{flag} must be true or false, got {getattr(self, flag)!r}")
        _num("warmup_steps", self.warmup_steps, low=0, integer=True)
        _num("bn_recalibrate", self.bn_recalibrate, low=0, integer=True)
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"TrainConfig.nesterov must be true or false, got {self.nesterov!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("TrainConfig.nesterov needs optimizer 'sgd' with momentum > 0, "
                             f"got optimizer={self.optimizer!r}, momentum={self.momentum!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass
class TrainResult:
    """Outcome of `train_proxy`. Accuracies are top-1 fractions in [0, 1]."""

    accuracy: float
    best_accuracy: float
    epochs_run: int
    seconds: float
    images_per_second: float
    history: list[tuple[int, float]] = field(default_factory=list)
    stopped_early: bool = False
    train_loss: float = float("nan")
    train_seconds: float = 0.0
    images_seen: int = 0
    mean_train_loss: float = float("nan")  # over every step (Ru et al. 2021's sum of training losses / steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [list(h) for h in self.history]
        return d


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    step, total = step - warmup, total - warmup
    if schedule == "constant" or total <= 0:
        return 1.0
    t = min(step, total) / total
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 1.0 - t  # linear


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int, gen: torch.Generator) -> None:
    """Re-estimate BatchNorm running statistics as a plain average over `batches` training
    batches with the final weights: after a short, fast-moving run the EMA statistics lag
    the weights and penalise deep nets most."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or batches <= 0:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    device = _model_device(model)
    try:
        for _ in range(batches):
            idx = torch.randint(0, len(x), (batch_size,), generator=gen, device=gen.device)
            model(x.index_select(0, idx.to(x.device)).to(device))
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, *,
                      memory_format: torch.memory_format = torch.contiguous_format) -> float:
    """Top-1 accuracy of `model` (put in eval mode) on in-memory tensors (batches in `memory_format`)."""
    if len(y) == 0:
        return float("nan")
    model.eval()
    device = _model_device(model)
    correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync at the end
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        correct += (model(xb).argmax(dim=1) == yb).sum()
    return int(correct) / len(y)


#: Steps between the trainer's finiteness checks, by device type (one host sync each: an accelerator
#: checks every 32 steps, the CPU, where reading a loss costs nothing, every step). A diverged run
#: names the first non-finite step either way.
CHECK_EVERY: dict[str, int] = {"cpu": 1}
CHECK_EVERY_ACCELERATOR = 32
#: channels_last on CUDA when autocast is on (tensor-core convolutions want NHWC; airbench does the
#: same). bench/gpu_throughput.py times the plain loop both ways: flip this if NCHW wins there.
CHANNELS_LAST = True
#: deterministic cuBLAS (CUDA docs): one of the two settings torch accepts in deterministic mode
CUBLAS_DETERMINISTIC = ":4096:8"


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it, else float16 (which needs a GradScaler); None: no autocast."""
    if not amp or device.type != "cuda":
        return None
    try:  # native support only: emulated bf16 (pre-Ampere) is slower than float16
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the emulation flag
        native = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float16


@contextlib.contextmanager
def _cuda_mode(device: torch.device, deterministic: bool) -> Iterator[None]:
    """cuDNN benchmarking (fast) or deterministic algorithms (repeatable) for one run, restored after."""
    if device.type != "cuda":
        # CPU kernels are deterministic at a fixed thread count already; on CPU the deterministic switch
        # would also cost ~2 s per process (it imports torch._inductor)
        yield
        return
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark)
    try:
        if deterministic:
            # read by cuBLAS when it first sizes its workspace: workers set it before CUDA starts too
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        else:
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.benchmark = True
        with warnings.catch_warnings():
            # global average pooling (output 1x1) has one contribution per input gradient, so the atomic
            # adds of its CUDA backward cannot reorder: it is deterministic although torch flags the kernel
            warnings.filterwarnings("ignore", message=".*adaptive_avg_pool2d_backward_cuda.*")
            yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]


def train_proxy(model: nn.Module, data: ProxyData, config: TrainConfig | None = None,
                report: ReportFn | None = None, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train `model` on `data.train` for `config.epochs`; validate on `data.val` after each epoch.

    `report(epoch, val_accuracy)` (epoch 1-based) is called after every epoch; returning
    True stops training and sets `stopped_early`. `progress(batches_done, total_batches)` is
    called after every batch (for a progress bar). Raises `TrainingDiverged` on a NaN or
    infinite loss.
    """
    cfg = config if config is not None else TrainConfig()
    x_train, y_train = data.train.tensors[0], data.train.tensors[1]
    x_val, y_val = data.val.tensors[0], data.val.tensors[1]
    n = len(y_train)
    if n == 0:
        raise ValueError(f"dataset {data.name!r} has no training images")
    device = _model_device(model)
    if x_train.device != device:
        x_train, y_train = x_train.to(device), y_train.to(device)
        x_val, y_val = x_val.to(device), y_val.to(device)

    batches_per_epoch = math.ceil(n / cfg.batch_size)
    if cfg.max_batches_per_epoch is not None:
        batches_per_epoch = min(batches_per_epoch, cfg.max_batches_per_epoch)
    total_steps = batches_per_epoch * cfg.epochs

    half = autocast_dtype(device, cfg.amp)
    layout = torch.channels_last if half is not None and CHANNELS_LAST else torch.contiguous_format
    check_every = CHECK_EVERY.get(device.type, CHECK_EVERY_ACCELERATOR)
    prev_threads = torch.get_num_threads()
    t_start = time.perf_counter()
    train_seconds = 0.0
    images_seen = 0
    history: list[tuple[int, float]] = []
    stopped = False
    last_loss = float("nan")
    all_loss_sum = 0.0
    step = 0
    try:
        if cfg.threads is not None and cfg.threads != prev_threads:
            torch.set_num_threads(cfg.threads)
        with _cuda_mode(device, cfg.deterministic), seeded(cfg.seed, device):
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
            if layout is torch.channels_last:
                model.to(memory_format=layout)
            optimizer = _make_optimizer(model, cfg)
            base_lrs = [g["lr"] for g in optimizer.param_groups]
            criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
            scaler = torch.amp.GradScaler("cuda", enabled=half is torch.float16)  # bf16 needs no scaling

            def check(losses: torch.Tensor, lo: int, hi: int, epoch: int, step0: int) -> None:
                """TrainingDiverged naming the first non-finite loss among batches [lo, hi) of the epoch."""
                bad = ~torch.isfinite(losses[lo:hi])
                if not bool(bad.any()):  # the one host sync of the window
                    return
                b = lo + int(bad.nonzero()[0, 0])
                lr = base_lrs[0] * _lr_factor(cfg.schedule, step0 + b, total_steps, cfg.warmup_steps)
                raise TrainingDiverged(
                    f"loss became {float(losses[b])} at epoch {epoch}, batch {b + 1} (lr={lr:.4g}): "
                    f"lower the learning rate (TrainConfig.lr / --lr), use label smoothing or check the model "
                    f"for numerically unstable layers")

            for epoch in range(1, cfg.epochs + 1):
                model.train()
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen, device="cpu")
                if device.type != "cpu":
                    perm = perm.to(device, non_blocking=True)
                losses = torch.empty(batches_per_epoch, dtype=torch.float32, device=device)  # stay on the device
                sizes: list[int] = []
                step0, checked = step, 0
                for b in range(batches_per_epoch):
                    idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                    xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
                    xb = xb.contiguous(memory_format=layout)
                    factor = _lr_factor(cfg.schedule, step, total_steps, cfg.warmup_steps)
                    for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                        g["lr"] = base * factor
                    with torch.autocast("cuda", dtype=half) if half is not None else contextlib.nullcontext():
                        loss = criterion(model(xb), yb)
                    losses[b] = loss.detach()
                    sizes.append(len(idx))
                    if b + 1 - checked >= check_every:
                        check(losses, checked, b + 1, epoch, step0)
                        checked = b + 1
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()  # plain backward/step without float16
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    if progress is not None:
                        progress(step, total_steps)
                check(losses, checked, batches_per_epoch, epoch, step0)
                # summed on the host in step order, as the per-step reads did: identical figures on the CPU
                loss_sum = 0.0
                for value, size in zip(losses.tolist(), sizes, strict=True):
                    loss_sum += value * size
                train_seconds += time.perf_counter() - t0  # after the sync above: the epoch's kernels are done
                images_seen += sum(sizes)
                last_loss = loss_sum / max(sum(sizes), 1)
                all_loss_sum += loss_sum
                if cfg.bn_recalibrate:
                    recalibrate_bn(model, x_train, cfg.bn_recalibrate, cfg.batch_size, gen)
                acc = evaluate_accuracy(model, x_val, y_val, cfg.eval_batch_size, memory_format=layout)
                history.append((epoch, acc))
                if report is not None and report(epoch, acc):
                    stopped = True
                    break
    finally:
        if cfg.threads is not None and torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
        if layout is not torch.contiguous_format:
            model.to(memory_format=torch.contiguous_format)  # hand the caller's model back as it came

    accs = [a for _, a in history]
    return TrainResult(
        accuracy=accs[-1],
        best_accuracy=max(accs),
        epochs_run=len(history),
        seconds=time.perf_counter() - t_start,
        images_per_second=images_seen / train_seconds if train_seconds > 0 else float("nan"),
        history=history,
        stopped_early=stopped,
        train_loss=last_loss,
        train_seconds=train_seconds,
        images_seen=images_seen,
        mean_train_loss=all_loss_sum / images_seen if images_seen else float("nan"),
    )
