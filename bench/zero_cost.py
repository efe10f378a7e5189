"""Do zero-cost proxies rank ShuffleNet v1 candidates like brief proxy training does?

Samples architectures from a small ShuffleNetV1Space (the embedded grey digits,
resized to 16x16 to keep it quick, 10 classes), trains each briefly, scores each with the zero-cost proxies at initialisation, and prints
the Spearman rank correlation of every proxy with the trained accuracy beside the
MACs-only and params-only baselines (a proxy is worth its time only if it beats them).

    python bench/zero_cost.py                 # 20 archs, 2 epochs, ~5-6 min on 2 busy cores
    python bench/zero_cost.py --n 40 --epochs 2 --json zc.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=_positive, default=20, help="architectures to sample (default 20; >= 3)")
    ap.add_argument("--epochs", type=_positive, default=2, help="proxy-training epochs per architecture (default 2)")
    ap.add_argument("--train-size", type=_positive, default=2000, help="training images (default 2000)")
    ap.add_argument("--val-size", type=_positive, default=500, help="validation images (default 500)")
    ap.add_argument("--resolution", type=_positive, default=16, help="proxy image side in pixels (default 16)")
    ap.add_argument("--batch", type=_positive, default=32, help="zero-cost batch size (default 32)")
    ap.add_argument("--threads", type=_positive, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write per-architecture rows and correlations here")
    args = ap.parse_args(argv)
    if args.n < 3:
        ap.error(f"--n must be >= 3 for a rank correlation, got {args.n}")

    import torch
    from scipy.stats import spearmanr

    from objectives.accuracy import TrainConfig, train_proxy
    from objectives.data import load_dataset
    from objectives.flops import analytic_macs, analytic_params
    from objectives.zero_cost import PROXIES, arch_zero_cost, proxy_batch
    from search_spaces import RandomTrial, ShuffleNetV1Space, build_model

    torch.set_num_threads(args.threads)
    data = load_dataset("default", train_size=args.train_size, val_size=args.val_size,
                        resolution=args.resolution, seed=args.seed)
    hw = (data.resolution, data.resolution)
    space = ShuffleNetV1Space(
        groups=(1, 2, 3, 4, 8), widths=(0.25, 0.5, 0.75), repeats=((1, 2), (1, 4), (1, 2)),
        in_channels=data.in_channels, num_classes=data.num_classes, small_input=True,
    )
    images, labels = proxy_batch(data, args.batch, seed=args.seed)
    # a short cosine schedule at a high rate: after 1 epoch most nets are still near chance
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.1, seed=args.seed, threads=args.threads)
    print(f"data {data.name}: {len(data.train.tensors[1])} train / {len(data.val.tensors[1])} val, "
          f"{data.in_channels}x{data.resolution}x{data.resolution}; {args.n} archs, {args.epochs} epoch(s), "
          f"zero-cost batch {args.batch}, {args.threads} thread(s)")

    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    t_all = time.perf_counter()
    header = f"{'#':>3} {'arch_id':16} {'g':>2} {'stem':>4} {'chans':14} {'reps':7} {'MMACs':>7} {'Mpar':>6} " + \
        " ".join(f"{p:>10}" for p in PROXIES) + f" {'zc_s':>5} {'acc':>6} {'train_s':>7}"
    print(header)
    tries = 0
    while len(rows) < args.n and tries < 20 * args.n:
        tries += 1
        arch = space.sample(RandomTrial(rng))
        if arch.arch_id in seen:
            continue
        seen.add(arch.arch_id)
        t0 = time.perf_counter()
        times: dict[str, float] = {}
        scores: dict[str, float] = {}
        for p in PROXIES:
            tp = time.perf_counter()
            scores.update(arch_zero_cost(arch, images, labels, proxies=[p], seed=args.seed))
            times[p] = time.perf_counter() - tp
        zc_s = time.perf_counter() - t0
        torch.manual_seed(args.seed)  # the same initialisation the proxies saw
        model = build_model(arch)
        result = train_proxy(model, data, cfg)
        row = {
            "arch_id": arch.arch_id, "arch": arch.to_dict(),
            "mmacs": analytic_macs(arch, hw) / 1e6, "mparams": analytic_params(arch) / 1e6,
            **scores, "proxy_seconds": times, "accuracy": result.accuracy, "train_seconds": result.seconds,
        }
        rows.append(row)
        st = arch.stages
        print(f"{len(rows):>3} {arch.arch_id:16} {st[0].groups:>2} {arch.stem_channels:>4} "
              f"{','.join(str(s.out_channels) for s in st):14} {','.join(str(s.repeats) for s in st):7} "
              f"{row['mmacs']:7.2f} {row['mparams']:6.3f} " + " ".join(f"{scores[p]:10.4g}" for p in PROXIES)
              + f" {zc_s:5.2f} {result.accuracy:6.3f} {result.seconds:7.1f}", flush=True)

    acc = [r["accuracy"] for r in rows]
    candidates = {**{p: [r[p] for r in rows] for p in PROXIES},
                  "mmacs (baseline)": [r["mmacs"] for r in rows], "params (baseline)": [r["mparams"] for r in rows]}
    correlations: dict[str, dict[str, float]] = {}
    print(f"\nSpearman rank correlation with accuracy over {len(rows)} archs "
          f"(accuracy {min(acc):.3f}..{max(acc):.3f}; total {time.perf_counter() - t_all:.0f} s)")
    print(f"{'predictor':18} {'rho':>7} {'p':>8} {'mean_s':>7} {'max_s':>7}")
    for name, values in candidates.items():
        rho, pval = spearmanr(values, acc)
        rho, pval = float(rho), float(pval)
        proxy_times = [r["proxy_seconds"][name] for r in rows] if name in PROXIES else [0.0]
        correlations[name] = {"rho": rho, "p": pval, "mean_s": float(np.mean(proxy_times)),
                              "max_s": float(np.max(proxy_times))}
        shown = "   n/a" if math.isnan(rho) else f"{rho:+7.3f}"
        print(f"{name:18} {shown:>7} {pval:8.3g} {np.mean(proxy_times):7.3f} {np.max(proxy_times):7.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "spearman": correlations}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
