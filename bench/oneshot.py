"""Does the one-shot signal rank candidates like stand-alone training, and what does it cost?

On the quickstart_oneshot experiment's space and budget (ShuffleNet v1 under 40 MMACs at 3x224x224),
on the embedded MNIST subset at 16x16: trains one supernet per sampler (uniform with S steps,
sandwich with S/3 steps: the same number of path forwards), scores N budget archs by inherited
weights (BN re-estimated), trains the same N archs stand-alone with the experiment-family's short
proxy recipe, and prints the Kendall tau (with a bootstrap interval) of each one-shot score (uniform and
sandwich with group counts sharing one dense 1x1 weight, and uniform with one weight per group count), of
MACs and of params against the stand-alone accuracy; plus the supernet's training cost as a
multiple of one stand-alone training of the largest budget candidate, and scoring seconds per candidate.

    python bench/oneshot.py                       # 12 archs, 450 uniform steps; ~10 min on one busy core
    python bench/oneshot.py --n 6 --steps 60      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.zero_cost import _positive  # noqa: E402 (the repository root first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=_positive, default=12, help="budget architectures to rank (default 12; >= 3)")
    ap.add_argument("--steps", type=_positive, default=450, help="uniform supernet steps (sandwich gets a third)")
    ap.add_argument("--epochs", type=_positive, default=2, help="stand-alone training epochs (default 2)")
    ap.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "quickstart_oneshot.yaml")
    ap.add_argument("--variants", default="uniform/shared,sandwich/shared,uniform/separate",
                    help="sampler/group_sharing pairs to train, comma-separated (default: all three)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    args = ap.parse_args(argv)
    if args.n < 3:
        ap.error(f"--n must be >= 3 for a rank correlation, got {args.n}")
    variants = [tuple(v.strip().split("/", 1)) for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if len(v) != 2 or v[0] not in ("uniform", "sandwich") or v[1] not in ("shared", "separate"):
            ap.error(f"--variants: each must be uniform|sandwich / shared|separate, got {'/'.join(v)!r}")

    import dataclasses

    import torch

    from nas.experiment import load_experiment
    from nas.pipeline.evaluate import proxy_data
    from objectives import oneshot
    from objectives.accuracy import TrainConfig, seed_everything, train_proxy
    from objectives.flops import analytic_macs, analytic_params
    from objectives.ranking import kendall_ci
    from search_spaces import build_model

    torch.set_num_threads(1)
    exp = load_experiment(args.experiment)
    space, data, hw = exp.build_space(), proxy_data(exp), exp.deploy.shape[1:]

    def size(a: Any) -> float:
        return float(analytic_macs(a, hw))

    rng = random.Random(f"bench:{args.seed}")
    archs: dict[str, Any] = {}
    while len(archs) < args.n:
        a = oneshot.sample_path(space, exp.fits, rng)
        archs.setdefault(a.arch_id, a)
    cands = list(archs.values())
    largest, _smallest = oneshot.budget_extremes(space, exp.fits, args.seed, size)

    # stand-alone reference: the short proxy recipe of the quickstart (AdamW, warm-up, BN re-estimation)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=64, optimizer="adamw", lr=0.002, weight_decay=0.01,
                       warmup_steps=8, label_smoothing=0.1, bn_recalibrate=8, seed=args.seed, threads=1)

    def standalone(a: Any) -> tuple[float, float]:
        seed_everything(args.seed)
        model = build_model(oneshot.to_proxy(a, data))
        r = train_proxy(model, data, tcfg)
        return r.accuracy, r.seconds

    _acc, largest_s = standalone(largest)
    print(f"{len(cands)} budget archs; largest budget candidate {size(largest) / 1e6:.1f} MMACs trains "
          f"({args.epochs} epochs) in {largest_s:.1f} s", flush=True)
    rows = []
    for a in cands:
        acc, secs = standalone(a)
        rows.append({"arch_id": a.arch_id, "mmacs": size(a) / 1e6, "mparams": analytic_params(a) / 1e6,
                     "standalone": acc, "standalone_s": secs})
        print(f"  {a.arch_id} {rows[-1]['mmacs']:6.1f} MMACs  stand-alone {acc:.3f} ({secs:.1f} s)", flush=True)

    out: dict[str, Any] = {"n": len(rows), "largest_standalone_s": largest_s, "samplers": {}}
    ref = [r["standalone"] for r in rows]
    for sampler, sharing in variants:
        steps = args.steps if sampler == "uniform" else max(1, args.steps // 3)
        cfg = dataclasses.replace(exp.oneshot_recipe.to_config(), sampler=sampler, steps=steps, seed=args.seed,
                                  group_sharing=sharing)
        name = f"{sampler}/{sharing}"
        with tempfile.TemporaryDirectory() as tmp:
            key = oneshot.supernet_key(space, exp.data.model_dump(mode="json"), cfg)
            path = Path(tmp) / "supernet.safetensors"
            run = oneshot.train_supernet(space, exp.fits, data, cfg, path, key, size=size)
            net = oneshot.load_supernet(path, space, data, key)
            t0 = time.perf_counter()
            scores = [oneshot.score_path(net, a, data, cfg) for a in cands]
            per = (time.perf_counter() - t0) / len(cands)
        tau, lo, hi = kendall_ci(scores, ref, seed=args.seed)
        for r, s in zip(rows, scores, strict=True):
            r[f"oneshot_{name}"] = s
        out["samplers"][name] = {"steps": steps, "train_s": run.seconds, "cost_x_largest": run.seconds / largest_s,
                                    "score_s_per_candidate": per, "tau": tau, "tau_low": lo, "tau_high": hi}
        print(f"{name:17} {steps} steps in {run.seconds:.0f} s = {run.seconds / largest_s:.1f}x the largest's "
              f"stand-alone training; scoring {per:.2f} s/candidate; Kendall tau {tau:+.3f} [{lo:+.2f}, {hi:+.2f}]",
              flush=True)
    for name in ("mmacs", "mparams"):
        tau, lo, hi = kendall_ci([r[name] for r in rows], ref, seed=args.seed)
        out[f"tau_{name}"] = {"tau": tau, "tau_low": lo, "tau_high": hi}
        print(f"{name:17} (baseline) Kendall tau {tau:+.3f} [{lo:+.2f}, {hi:+.2f}]")
    out["rows"] = rows
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
