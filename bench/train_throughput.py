"""Training throughput: `objectives.accuracy.train_proxy` vs plain hand-written PyTorch loops.

Same architecture (freshly built under the same seed), same data, same batch size, SGD with
momentum; the runs alternate order, each is repeated, and medians are printed with the
ratio framework/plain (goal: >= 1.0, i.e. the framework adds no overhead).

Two plain baselines:
  plain_dataloader  the idiomatic loop: DataLoader(TensorDataset, shuffle=True)
  plain_indexed     a minimal loop slicing in-memory tensors by a random permutation

    python bench/train_throughput.py                       # small CNN on the embedded MNIST
    python bench/train_throughput.py --model shufflenet_v1_g3_x0_5 --resolution 32 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import objectives.accuracy as acc_mod  # noqa: E402
from objectives.accuracy import TrainConfig, seed_everything, train_proxy  # noqa: E402
from objectives.data import ProxyData, load_dataset  # noqa: E402


def small_cnn(in_ch: int, classes: int, width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes),
    )


def model_factory(name: str | None, data: ProxyData) -> tuple[Callable[[], nn.Module], str]:
    """A builder for the benchmarked model and its description."""
    if name:
        try:
            from search_spaces import build_model, preset
        except ImportError as exc:
            print(f"note: search_spaces unavailable ({exc}); using the small CNN instead of {name}", file=sys.stderr)
        else:
            try:
                arch = dataclasses.replace(preset(name), in_channels=data.in_channels,
                                           num_classes=data.num_classes, small_input=True)
            except ValueError as exc:
                raise SystemExit(f"error: --model: {exc}") from None
            return (lambda: build_model(arch)), f"{name} (small_input, {data.in_channels}ch, {data.num_classes} classes)"
    return (lambda: small_cnn(data.in_channels, data.num_classes)), "small_cnn(width=16)"


def _sgd(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


class _EvalTimer:
    """Wraps the trainer's per-epoch validation to subtract its CPU time (plain loops do not validate)."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._orig = acc_mod.evaluate_accuracy

    def __enter__(self) -> _EvalTimer:
        def timed(*a, **kw):
            c0 = time.process_time()
            try:
                return self._orig(*a, **kw)
            finally:
                self.cpu += time.process_time() - c0

        acc_mod.evaluate_accuracy = timed
        return self

    def __exit__(self, *exc: object) -> None:
        acc_mod.evaluate_accuracy = self._orig


def run_framework(build: Callable[[], nn.Module], data: ProxyData, args: argparse.Namespace) -> tuple[float, float]:
    seed_everything(args.seed)
    model = build()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads, schedule="cosine")
    with _EvalTimer() as ev:
        c0 = time.process_time()
        r = train_proxy(model, data, cfg)
        cpu = time.process_time() - c0 - ev.cpu
    return r.images_per_second, r.images_seen / cpu


def run_plain_dataloader(build: Callable[[], nn.Module], data: ProxyData, args: argparse.Namespace) -> tuple[float, float]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build()
    opt = _sgd(model, args.lr)
    crit = nn.CrossEntropyLoss()
    loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    seen, seconds, cpu = 0, 0.0, 0.0
    for _ in range(args.epochs):
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        for xb, yb in loader:
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            seen += len(yb)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return seen / seconds, seen / cpu


def run_plain_indexed(build: Callable[[], nn.Module], data: ProxyData, args: argparse.Namespace) -> tuple[float, float]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build()
    opt = _sgd(model, args.lr)
    crit = nn.CrossEntropyLoss()
    x, y = data.train.tensors
    g = torch.Generator().manual_seed(args.seed)
    seen, seconds, cpu = 0, 0.0, 0.0
    for _ in range(args.epochs):
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            seen += len(yb)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
    return seen / seconds, seen / cpu


RUNNERS = {
    "framework": run_framework,
    "plain_dataloader": run_plain_dataloader,
    "plain_indexed": run_plain_indexed,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="search_spaces preset name (default: a small CNN)")
    p.add_argument("--dataset", default="default", help="objectives.data dataset name (default: embedded MNIST)")
    p.add_argument("--root", default=None, help="dataset root (cifar10, imagefolder)")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)

    data = load_dataset(args.dataset, root=args.root, train_size=args.train_size, val_size=200,
                        resolution=args.resolution, seed=args.seed)
    build, desc = model_factory(args.model, data)
    prev_threads = torch.get_num_threads()

    # warm-up (one-time imports, allocator, oneDNN primitive caches), not timed
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    for fn in RUNNERS.values():
        fn(build, data, warm)

    names = list(RUNNERS)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(args.repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for n in order:
            w, c = RUNNERS[n](build, data, args)
            wall[n].append(w)
            cpu[n].append(c)
    torch.set_num_threads(prev_threads)

    def summary(samples: dict[str, list[float]]) -> dict[str, object]:
        med = {n: statistics.median(v) for n, v in samples.items()}
        return {
            "median": med,
            "spread": {n: max(v) - min(v) for n, v in samples.items()},
            "samples": samples,
            "ratio_framework_over": {b: med["framework"] / med[b] for b in names if b != "framework"},
        }

    figures = {
        "model": desc,
        "dataset": data.name,
        "train_images": len(data.train),
        "input": list(data.input_shape),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "unit": "training images per second (validation excluded)",
        "wall_clock": summary(wall),
        "cpu_clock": summary(cpu),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"model {desc}; data {data.name} {len(data.train)} train images at "
          f"{'x'.join(map(str, data.input_shape))}; batch {args.batch_size}; {args.epochs} epoch(s); "
          f"{args.threads} thread(s); {args.repeats} repeats, alternating order")
    for clock in ("wall_clock", "cpu_clock"):
        fig = figures[clock]
        note = "" if clock == "wall_clock" else " (process CPU time: robust to other load on the machine)"
        print(f"\n{clock}{note}")
        print(f"  {'loop':<18}{'median img/s':>14}{'spread':>10}   samples")
        for n in names:
            print(f"  {n:<18}{fig['median'][n]:>14.1f}{fig['spread'][n]:>10.1f}   "
                  + ", ".join(f"{v:.0f}" for v in fig["samples"][n]))
        for b, r in fig["ratio_framework_over"].items():
            verdict = "ok" if r >= 1.0 else ("within 3%" if r >= 0.97 else "SLOWER")
            print(f"  ratio framework/{b}: {r:.3f} ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
