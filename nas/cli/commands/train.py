"""`shufflenas train`: one proxy training of one architecture, with a progress bar."""

from __future__ import annotations

import argparse
import json
import re

from nas.cli.args import UserError, load_arch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one architecture briefly on a proxy task and print its accuracy",
        description="Proxy-train a preset or an arch JSON on a dataset (embedded default: MNIST subset).",
    )
    p.add_argument("arch", metavar="PRESET|ARCH.json")
    p.add_argument("--data", default="default",
                   help="dataset: default, digits, cifar10, cifar100, fashion_mnist, imagefolder")
    p.add_argument("--root", default=None,
                   help="dataset folder (cifar10/100, imagefolder; fashion_mnist defaults to Debian's "
                        "dataset-fashion-mnist in /usr/share/datasets/fashion-mnist)")
    p.add_argument("--download", action="store_true", help="download CIFAR if missing (needs a network)")
    p.add_argument("--train-size", type=int, default=None)
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "linear", "constant"])
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto",
                   help="auto (the first CUDA device when there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--deterministic", action="store_true",
                   help="on CUDA: equal results run to run (deterministic algorithms), at some speed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from objectives import data as datasets
    from objectives.accuracy import (
        TrainConfig,
        TrainingDiverged,
        build_on,
        resolve_device,
        seed_everything,
        train_proxy,
    )

    arch = load_arch(args.arch)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        raise UserError(f"argument --device: {e}") from None
    try:
        config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
            schedule=args.schedule, label_smoothing=args.label_smoothing, seed=args.seed, threads=args.threads,
            device=args.device, deterministic=args.deterministic,
        )
    except ValueError as e:  # "TrainConfig.lr must be ..." -> "argument --lr: must be ..."
        m = re.match(r"TrainConfig\.(\w+) (.*)", str(e))
        raise UserError(f"argument --{m[1].replace('_', '-')}: {m[2]}" if m else str(e)) from None
    try:
        data = datasets.load_dataset(
            args.data, root=args.root, train_size=args.train_size, val_size=args.val_size,
            resolution=args.resolution, seed=args.seed, download=args.download,
        )
    except (datasets.DataError, ValueError) as e:
        raise UserError(f"argument --data: {e}") from None
    proxy = arch.for_proxy(in_channels=data.in_channels, num_classes=data.num_classes, resolution=data.resolution)
    seed_everything(args.seed)
    model = build_on(proxy, device)  # the trainer follows the model (and moves the data once)
    history: list[tuple[int, float]] = []

    def report(epoch: int, acc: float) -> bool:
        history.append((epoch, acc))
        return False

    try:
        if args.json:
            result = train_proxy(model, data, config, report)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(
                TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} batches"),
                TextColumn("{task.description}"), TimeRemainingColumn(),
            ) as bar:
                task = bar.add_task("", total=None)

                def progress(done: int, total: int) -> None:
                    last = f"val acc {history[-1][1]:.3f}" if history else ""
                    bar.update(task, completed=done, total=total, description=last)

                result = train_proxy(model, data, config, report, progress=progress)
    except TrainingDiverged as e:
        raise UserError(str(e)) from None
    out = {
        "arch_id": proxy.arch_id, "data": data.name, "input": list(data.input_shape),
        "accuracy": result.accuracy, "best_accuracy": result.best_accuracy, "epochs_run": result.epochs_run,
        "seconds": result.seconds, "images_per_second": result.images_per_second, "history": result.history,
        "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{args.arch} on {data.name} ({'x'.join(map(str, data.input_shape))}): top-1 accuracy "
            f"{result.accuracy:.4f} after {result.epochs_run} epochs in {result.seconds:.1f} s "
            f"({result.images_per_second:.0f} images/s on {device})"
        )
    return 0
