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

With --fashion, the figures the one-shot issue is judged by, on Fashion-MNIST: each sampler/sharing
variant of experiments/fashion_mnist_oneshot.yaml's supernet is trained (resumable, under --work),
and `fidelity` ranks the 41 networks of the stand-alone reference set shufflenet_v1_fashion_mnist
by each one-shot score, beside NASWOT, ZiCo, MeCo, params, MACs and the short proxy of
experiments/fashion_mnist.yaml on the same networks, with the seed-vs-seed ceiling; plus the
supernet's training cost as a multiple of one stand-alone training (the reference recipe) of the
largest budget candidate, timed in the same run, and the scoring seconds per candidate.
--search N then times an N-candidate NSGA-II search scored by the best variant.

    nice python bench/oneshot.py --fashion --search 1000   # ~1.5 h on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import math
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
    ap.add_argument("--steps", type=_positive, default=None,
                    help="uniform supernet steps (sandwich gets a third; default 450, --fashion: the experiment's)")
    ap.add_argument("--epochs", type=_positive, default=2, help="stand-alone training epochs (default 2)")
    ap.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "quickstart_oneshot.yaml")
    ap.add_argument("--variants", default="uniform/shared,sandwich/shared,uniform/separate",
                    help="sampler/group_sharing pairs to train, comma-separated (default: all three)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    ap.add_argument("--fashion", action="store_true",
                    help="rank the Fashion-MNIST stand-alone reference set (experiments/fashion_mnist_oneshot.yaml)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "oneshot_fashion",
                    help="--fashion: supernets, fidelity cache and search study (resumable)")
    ap.add_argument("--search", type=int, default=0, metavar="N",
                    help="--fashion: also time an N-candidate search scored by the best variant (0: none)")
    ap.add_argument("--limit", type=_positive, default=None,
                    help="--fashion: rank only the reference's first K networks (a smoke run)")
    args = ap.parse_args(argv)
    if args.fashion:
        return fashion(args)
    args.steps = args.steps or 450
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


FASHION = ROOT / "experiments" / "fashion_mnist_oneshot.yaml"
SHORT_PROXY = ROOT / "experiments" / "fashion_mnist.yaml"
REFERENCE = "shufflenet_v1_fashion_mnist"


def fashion(args: argparse.Namespace) -> int:
    """The one-shot signal against the Fashion-MNIST stand-alone reference (see the module docstring)."""
    import dataclasses
    import statistics

    import optuna
    import torch

    from bench.fashion_reference import RECIPE
    from nas.analysis.fidelity_run import run_fidelity
    from nas.experiment import load_experiment
    from nas.pipeline.evaluate import proxy_data
    from nas.pipeline.supernets import supernet_checkpoint
    from objectives import oneshot
    from objectives.accuracy import TrainConfig, seed_everything, train_proxy
    from objectives.flops import analytic_macs
    from objectives.ranking import load_reference
    from search_spaces import build_model

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    variants = [tuple(v.strip().split("/", 1)) for v in args.variants.split(",") if v.strip()]
    reference = load_reference(REFERENCE)
    if args.limit:
        reference = dataclasses.replace(reference, entries=reference.entries[:args.limit])
    base = load_experiment(FASHION, {"search.run_dir": str(work)})
    steps_uniform = args.steps or base.oneshot_recipe.steps
    times = work / "train_seconds.json"  # first (uninterrupted) training time per supernet key
    trained_s: dict[str, float] = json.loads(times.read_text()) if times.is_file() else {}
    space, hw = base.build_space(), base.deploy.shape[1:]

    def size(a: Any) -> float:
        return float(analytic_macs(a, hw))

    # one stand-alone training of the largest budget candidate with the reference recipe (training only)
    largest, _ = oneshot.budget_extremes(space, base.fits, args.seed, size)
    ref_data = proxy_data(load_experiment(FASHION, {**{f"data.{k}": v for k, v in RECIPE["data"].items()},
                                                    "search.run_dir": str(work)}))
    tr = RECIPE["train"]
    tcfg = TrainConfig(epochs=tr["epochs"], batch_size=tr["batch_size"], optimizer=tr["optimizer"], lr=tr["lr"],
                       weight_decay=tr["weight_decay"], schedule=tr["schedule"], warmup_steps=tr["warmup_steps"],
                       label_smoothing=tr["label_smoothing"], bn_recalibrate=0, seed=args.seed, threads=1)
    seed_everything(args.seed)
    model = build_model(oneshot.to_proxy(largest, ref_data))
    largest_s = train_proxy(model, ref_data, tcfg).seconds
    print(f"largest budget candidate {size(largest) / 1e6:.1f} MMACs: one stand-alone training with the reference "
          f"recipe ({tr['epochs']} epochs x {RECIPE['data']['train_size']} images) takes {largest_s:.1f} s", flush=True)

    out: dict[str, Any] = {"reference": REFERENCE, "largest_standalone_s": largest_s, "variants": {}}
    best: tuple[float, Any] | None = None
    for sampler, sharing in variants:
        name = f"{sampler}/{sharing}"
        steps = steps_uniform if sampler == "uniform" else max(1, steps_uniform // 3)
        exp = load_experiment(FASHION, {"search.run_dir": str(work), "oneshot.sampler": sampler,
                                        "oneshot.group_sharing": sharing, "oneshot.steps": steps})
        cfg = exp.oneshot_recipe.to_config()
        path, key = supernet_checkpoint(exp)
        run = oneshot.train_supernet(space, exp.fits, proxy_data(exp), cfg, path, key, size=size)
        if not run.resumed_from:
            trained_s[key] = run.seconds
            times.write_text(json.dumps(trained_s))
        train_s = trained_s.get(key, float("nan"))  # NaN: resumed mid-way, so no one run's time
        fid = run_fidelity(exp, reference, cache_dir=work / "fidelity")
        per = statistics.median(r["oneshot_s"] for r in fid.rows if r.get("oneshot_s") is not None) \
            if any(r.get("oneshot_s") is not None for r in fid.rows) else float("nan")
        tau = fid.proxy.to_dict()
        cost = train_s / largest_s
        out["variants"][name] = {"steps": steps, "train_s": train_s, "cost_x_largest": cost,
                                 "score_s_per_candidate": per, "tau": tau["tau"], "tau_low": tau["tau_low"],
                                 "tau_high": tau["tau_high"], "supernet": key}
        print(f"{name:17} {steps} steps in {train_s:.0f} s = {cost:.1f}x the largest's stand-alone training; "
              f"scoring {per:.2f} s/candidate (median); Kendall tau {tau['tau']:+.3f} "
              f"[{tau['tau_low']:+.2f}, {tau['tau_high']:+.2f}]", flush=True)
        if best is None or tau["tau"] > best[0]:
            best = (tau["tau"], exp, fid)
    if best is None:
        raise SystemExit("oneshot: --variants names no variant")
    short = run_fidelity(load_experiment(SHORT_PROXY), reference, cache_dir=work / "fidelity")
    figs = {f.name: f.to_dict() for f in best[2].baselines()} | {"short proxy (2 epochs)": short.proxy.to_dict()}
    out["baselines"] = {k: {"tau": v["tau"], "tau_low": v["tau_low"], "tau_high": v["tau_high"]} for k, v in figs.items()}
    out["ceiling"] = best[2].ceiling_dict()
    for k, v in figs.items():
        print(f"{k:17} Kendall tau {v['tau']:+.3f} [{v['tau_low']:+.2f}, {v['tau_high']:+.2f}]")
    if out["ceiling"]:
        c = out["ceiling"]
        print(f"{'seed vs seed':17} Kendall tau {c.get('tau', float('nan')):+.3f} (the ceiling on these networks)")
    params_tau = out["baselines"].get("params", {}).get("tau", float("nan"))
    top = max(out["variants"].items(), key=lambda kv: kv[1]["tau"])
    ok = top[1]["tau"] >= 0.7 and top[1]["tau"] > params_tau
    out["goal"] = {"variant": top[0], "tau": top[1]["tau"], "params_tau": params_tau, "pass": ok}
    print(f"goal (one-shot tau >= 0.7 and above params): {'PASS' if ok else 'MISS'} -- best {top[0]} "
          f"{top[1]['tau']:+.3f} vs params {params_tau:+.3f}")
    cost_ok = all(v["cost_x_largest"] <= 10 for v in out["variants"].values() if not math.isnan(v["cost_x_largest"]))
    print(f"goal (supernet training <= 10x one stand-alone training): {'PASS' if cost_ok else 'MISS'}; "
          f"(scoring <= 1 s/candidate): {'PASS' if top[1]['score_s_per_candidate'] <= 1 else 'MISS'}")
    if args.search:
        out["search"] = timed_search(best[1], args.search, work)
    (work / "result.json").write_text(json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


def timed_search(exp: Any, n: int, work: Path) -> dict[str, Any]:
    """An n-candidate NSGA-II search of `exp` scored one-shot (its own supernet), timed end to end."""
    from nas.analysis.frame import trials_frame
    from nas.backends.optuna_search import run_optuna_search
    from nas.experiment import validate_experiment
    from nas.storage import open_study

    name = f"search{n}"
    raw = exp.model_dump(mode="json")
    exp = validate_experiment(raw, str(FASHION), {"search.n_trials": n, "search.study_name": name})
    t0 = time.perf_counter()
    run_optuna_search(exp, show_progress=False)
    wall = time.perf_counter() - t0
    frame = trials_frame(open_study(name, exp.storage_url))
    done = frame[frame["state"] == "COMPLETE"]
    res = {"candidates": n, "complete": len(done), "trials": len(frame), "workers": exp.search.workers,
           "population": exp.search.population_size, "wall_s": wall, "per_candidate_s": wall / max(1, len(done)),
           "best_oneshot_accuracy": float(done["oneshot_accuracy"].max()) if len(done) else float("nan"),
           "pass": wall <= 15 * 60}
    print(f"search: {len(done)} candidates complete ({len(frame)} trials, {exp.search.workers} workers, NSGA-II "
          f"population {exp.search.population_size}) in {wall / 60:.1f} min = {res['per_candidate_s']:.2f} s each; "
          f"goal <= 15 min: {'PASS' if res['pass'] else 'MISS'}", flush=True)
    return res


if __name__ == "__main__":
    sys.exit(main())
