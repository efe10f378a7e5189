"""GPU training throughput: the project's trainer against a plain loop, and N candidates per GPU.

1. `train_proxy` (defaults: bf16 autocast where supported, channels_last, cuDNN benchmarking, no
   host sync per step) against a plain hand-written loop on the same model and data (the same
   settings, data resident on the GPU, one sync at the end), timed over the training steps
   only; the plain loop also runs in NCHW, so `objectives.accuracy.CHANNELS_LAST` can be judged.
   Goal: trainer >= 0.9x the plain loop.
2. Aggregate throughput (images/s over all running trials) with N candidates training at once
   on one GPU, one process each, as `search.trials_per_gpu: N` runs them (N = 1, 2, 4, 8).
   Goal: the best N reaches >= 3x one candidate per GPU; that N is the one to set.

On a machine without CUDA it prints "not measured: no CUDA device" and exits 0 (never a pass).
`--device cpu` runs the same code on the CPU (a smoke test of the script, not a GPU figure).

    python bench/gpu_throughput.py                        # shufflenet_v1_g3_x1_0, 28 px, 4000 images
    python bench/gpu_throughput.py --candidates 1,2,4,8,16 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOT_MEASURED = "not measured: no CUDA device"
GOAL_RATIO = 0.9
GOAL_AGGREGATE = 3.0


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(data on the device, the proxy arch, the device)."""
    import dataclasses

    import torch
    from torch.utils.data import TensorDataset

    from objectives.data import load_dataset
    from search_spaces import preset

    device = torch.device(args.device)
    data = load_dataset("default", train_size=args.train_size, val_size=args.val_size, resolution=args.resolution,
                        seed=0)
    data = dataclasses.replace(data, train=TensorDataset(*(t.to(device) for t in data.train.tensors)),
                               val=TensorDataset(*(t.to(device) for t in data.val.tensors)))  # resident, as a search
    arch = preset(args.model).for_proxy(in_channels=data.in_channels, num_classes=data.num_classes,
                                        resolution=data.resolution)
    return data, arch, device


def _config(args: argparse.Namespace) -> Any:
    from objectives.accuracy import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, threads=1)


def trainer_ips(args: argparse.Namespace, data: Any, arch: Any, device: Any) -> float:
    """Images/s of `train_proxy` over its training steps (evaluation excluded)."""
    from objectives.accuracy import build_on, seed_everything, train_proxy

    seed_everything(0)
    return float(train_proxy(build_on(arch, device), data, _config(args)).images_per_second)


def plain_ips(args: argparse.Namespace, data: Any, arch: Any, device: Any, channels_last: bool) -> float:
    """Images/s of a plain loop: same model, data, batch size and SGD; autocast as the trainer picks
    it, the chosen layout, cuDNN benchmarking, losses never read, one sync at the end."""
    import contextlib

    import torch

    from objectives.accuracy import autocast_dtype, build_on, seed_everything

    cfg = _config(args)
    seed_everything(0)
    model = build_on(arch, device).train()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    half = autocast_dtype(device, True)
    x, y = data.train.tensors
    n = len(y)
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, device=device)
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                xb = x.index_select(0, idx).contiguous(memory_format=layout)
                with torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext():
                    loss = loss_fn(model(xb), y.index_select(0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        _sync(device)
        return cfg.epochs * n / (time.perf_counter() - t0)
    finally:
        torch.backends.cudnn.benchmark = prev


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _candidate(args: argparse.Namespace, start: Any, out: Any) -> None:
    """One candidate's process: set up, wait for the others, train, report (images, start, end)."""
    from objectives.accuracy import build_on, seed_everything, train_proxy

    data, arch, device = _setup(args)
    seed_everything(0)
    model = build_on(arch, device)
    start.wait()
    t0 = time.monotonic()  # system-wide on Linux: comparable across the processes
    res = train_proxy(model, data, _config(args))
    out.put((res.images_seen, t0, time.monotonic()))


def aggregate_ips(args: argparse.Namespace, n: int) -> float:
    """Images/s over all of `n` candidate processes training at once (first start to last end)."""
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_candidate, args=(args, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.timeout) for _ in procs]
    for p in procs:
        p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a candidate process failed (exit codes {[p.exitcode for p in procs]})")
    images = sum(r[0] for r in results)
    return images / (max(r[2] for r in results) - min(r[1] for r in results))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from objectives.accuracy import CHANNELS_LAST, autocast_dtype

    data, arch, device = _setup(args)
    trainer_ips(args, data, arch, device)  # warm-up: CUDA context, cuDNN autotuning, allocator
    plain_ips(args, data, arch, device, True)
    runs: dict[str, list[float]] = {"trainer": [], "plain_channels_last": [], "plain_nchw": []}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        runs["trainer"].append(trainer_ips(args, data, arch, device))
        runs["plain_channels_last"].append(plain_ips(args, data, arch, device, True))
        runs["plain_nchw"].append(plain_ips(args, data, arch, device, False))
    med = {k: statistics.median(v) for k, v in runs.items()}
    trainer_nhwc = CHANNELS_LAST and autocast_dtype(device, True) is not None  # the layout the trainer picks
    plain = med["plain_channels_last" if trainer_nhwc else "plain_nchw"]
    agg = {n: aggregate_ips(args, n) for n in args.candidates}
    one = agg.get(1) or next(iter(agg.values()))
    best = max(agg, key=lambda k: agg[k])
    return {
        "measured": True, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model, "resolution": data.resolution, "train_size": args.train_size,
        "batch_size": args.batch_size, "epochs": args.epochs, "repeats": args.repeats,
        "autocast": str(autocast_dtype(device, True)),
        "channels_last": trainer_nhwc, "images_per_s": med, "runs": runs,
        "ratio_trainer_over_plain": med["trainer"] / plain, "goal_ratio": GOAL_RATIO,
        "aggregate_images_per_s": {str(k): v for k, v in agg.items()},
        "aggregate_over_one": {str(k): v / one for k, v in agg.items()},
        "best_candidates_per_gpu": best, "best_aggregate_over_one": agg[best] / one, "goal_aggregate": GOAL_AGGREGATE,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shufflenet_v1_g3_x1_0", help="a paper preset")
    p.add_argument("--resolution", type=int, default=28)
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--candidates", default="1,2,4,8", help="candidates per GPU to time, comma-separated")
    p.add_argument("--device", default="cuda", help="cuda (the figure) or cpu (a smoke test of this script)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one candidate process")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        args.candidates = sorted({int(c) for c in args.candidates.split(",") if c.strip()})
        if not args.candidates or min(args.candidates) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--candidates must be positive integers separated by commas, got {args.candidates!r}")
    import torch

    torch.set_num_threads(1)  # as the trainer runs (train.threads 1), so the plain loop is timed alike
    if args.device != "cpu" and not torch.cuda.is_available():
        print(json.dumps({"measured": False, "reason": NOT_MEASURED}) if args.json else NOT_MEASURED)
        return 0
    d = measure(args)
    if args.json:
        print(json.dumps(d))
        return 0
    ips = d["images_per_s"]
    print(f"{d['model']} at {d['resolution']} px, {d['train_size']} images, batch {d['batch_size']}, "
          f"{d['epochs']} epochs on {d['gpu']} ({d['autocast']}, channels_last {d['channels_last']}); "
          f"medians of {d['repeats']}:")
    print(f"  train_proxy {ips['trainer']:,.0f} images/s; plain loop {ips['plain_channels_last']:,.0f} (channels_last), "
          f"{ips['plain_nchw']:,.0f} (NCHW); trainer / plain {d['ratio_trainer_over_plain']:.2f}x "
          f"(goal >= {GOAL_RATIO}x)")
    for n, v in d["aggregate_images_per_s"].items():
        print(f"  {n} candidate(s) per GPU: {v:,.0f} images/s in all ({d['aggregate_over_one'][n]:.2f}x one)")
    print(f"  best: {d['best_candidates_per_gpu']} per GPU, {d['best_aggregate_over_one']:.2f}x one "
          f"(goal >= {GOAL_AGGREGATE}x): set search.trials_per_gpu: {d['best_candidates_per_gpu']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
