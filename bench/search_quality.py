"""Search quality: hypervolume of TPE and NSGA-II against random search, and presets dominated.

For each sampler and seed, the real Optuna backend (nas.backends.optuna_search.run_optuna_search:
budget-aware sampling, constraints, the study contract) runs the same number of trials
under the same budget; the hypervolume of each study's COMPLETE trials is computed with a
reference point shared by all runs (MMACs: the budget; accuracy: the worst value seen in
any run minus 10% of the range), and printed as a ratio to random search.
For each paper preset that fits the budget (evaluated on the same pipeline as a reference
trial), the script says whether any searched architecture of that sampler dominates it.

  python bench/search_quality.py --cheap            # minutes: NASWOT score as the accuracy proxy
  python bench/search_quality.py --trials 20        # real proxy training (slow: every trial trains)
  python bench/search_quality.py --time-budget 150 --samplers random,tpe,nsga2,mf --seeds 0,1,2
      # equal CPU time: 12 runs of ~150 s, about 34 min on one core

`--time-budget S` (training mode) gives every method the same wall time S per seed instead of
the same trial count, and trains single-fidelity methods at the full budget (train.epochs x
the top rung); `mf` is TPE with `fidelity: {rungs: [1, 3, 9], promote: 1/3}` on the base
epochs, so its top rung is that same full budget: every front is compared at one fidelity.
Methods run interleaved (seed by seed) so machine noise hits them alike. Reference presets
are left out in this mode (they would eat the short budget). Goal printed as PASS/FAIL:
multi-fidelity >= 1.1x random and above TPE (median hypervolume over seeds).

`--cheap` replaces proxy training by the NASWOT zero-cost score (Mellor et al. 2021) of the
proxy network on 64 images of the proxy data set; MACs are the analytic counts either way.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BASE: dict[str, Any] = {
    "name": "bench_quality",
    "budget": {"max_mmacs": 40},
    "objectives": ["accuracy", "mmacs"],
    "data": {"name": "default", "train_size": 2000, "val_size": 500},
    "train": {"epochs": 1, "batch_size": 128, "max_batches_per_epoch": 8, "threads": 1},
    "latency": {"backend": "none"},
    "keep_weights": False,
    "reference_presets": ["shufflenet_v1_g1_x0_5", "shufflenet_v1_g3_x0_5", "shufflenet_v1_g8_x0_25"],
}


@functools.lru_cache(maxsize=4096)
def _naswot(proxy_json: str, data_key: tuple) -> float:
    import torch

    from nas.pipeline.evaluate import proxy_data
    from objectives.zero_cost import arch_zero_cost
    from search_spaces import Arch

    exp = _EXP[data_key]
    data = proxy_data(exp)
    x, y = data.train.tensors[0][:64], data.train.tensors[1][:64]
    torch.set_num_threads(1)
    return float(arch_zero_cost(Arch.from_json(proxy_json), x, y, proxies=["naswot"], seed=0)["naswot"])


_EXP: dict[tuple, Any] = {}


def cheap_evaluate(arch: Any, exp: Any, reporter: Any = None, *, run_dir: Any = None, on_attr: Any = None,
                   deadline: Any = None) -> Any:
    """evaluate() with the NASWOT score in place of trained accuracy (same gate, same attrs)."""
    from nas.pipeline.evaluate import EvalResult, OverBudget, constraint_values, proxy_data
    from objectives.flops import analytic_macs, analytic_params

    attrs: dict[str, Any] = {}

    def put(k: str, v: Any) -> None:
        attrs[k] = v
        if on_attr is not None:
            on_attr(k, v)

    c, h, w = exp.deploy.shape
    mm = analytic_macs(arch, (h, w)) / 1e6
    for k, v in (("arch", arch.to_json()), ("arch_id", arch.arch_id), ("mmacs", mm),
                 ("params", analytic_params(arch))):
        put(k, v)
    cons = constraint_values(exp, mm)
    put("constraint", cons)
    if not exp.fits(arch):
        raise OverBudget(f"over budget: {mm:.2f} MMACs > {exp.budget.max_mmacs:g}", attrs, cons)
    data = proxy_data(exp)
    proxy = arch.with_io(in_channels=data.in_channels, num_classes=data.num_classes, small_input=data.resolution <= 64)
    key = (exp.data.name, exp.data.train_size, exp.data.seed)
    _EXP.setdefault(key, exp)
    score = _naswot(proxy.to_json(), key)
    put("zero_cost", {"naswot": score})
    put("accuracy_proxy", "naswot")
    put("accuracy", score)
    return EvalResult(values={"accuracy": score, "mmacs": mm}, attrs=attrs, constraint=cons)


MF_RUNGS = [1, 3, 9]
#: --time-budget without --experiment: the quickstart's recipe on short epochs (a full-budget trial is
#: 9 epochs of 20 batches of 32), so a budget of minutes holds tens of trials, not one. Rung 1 must
#: rank, not sit at chance: BN statistics re-estimated before each evaluation lift it from 0.10 to
#: 0.35-0.38 on three random candidates (measured; without it 20-30 batches give 0.10-0.17).
TIMED: dict[str, Any] = {
    "data": {"name": "default", "train_size": 1500, "val_size": 500, "resolution": 16, "seed": 0},
    "train": {"epochs": 1, "batch_size": 32, "max_batches_per_epoch": 20, "optimizer": "adamw", "lr": 0.003,
              "weight_decay": 0.01, "threads": 1, "bn_recalibrate": 5},
}


def run_one(base: dict[str, Any], sampler: str, seed: int, trials: int, workdir: Path, cheap: bool,
            time_budget: float | None = None) -> Any:
    from nas.analysis.frame import trials_frame
    from nas.backends.optuna_search import TrialObjective, run_optuna_search
    from nas.experiment import validate_experiment
    from nas.storage import open_study

    name = f"{sampler}_s{seed}"
    base = copy.deepcopy(base)  # overrides write into nested sections: never into the caller's
    over: dict[str, Any] = {
        "search.sampler": "tpe" if sampler == "mf" else sampler, "search.seed": seed, "search.n_trials": trials,
        "search.study_name": name, "search.run_dir": str(workdir / name), "search.workers": 1,
    }
    if time_budget is not None:  # equal time; every front at the full budget (base epochs x top rung)
        epochs = int(base.get("train", {}).get("epochs", 1))
        over.update({"search.timeout": time_budget, "search.n_trials": 100_000, "reference_presets": []})
        if sampler == "mf":
            base["fidelity"] = {"rungs": MF_RUNGS, "promote": "1/3"}
        else:
            over["train.epochs"] = epochs * MF_RUNGS[-1]
    exp = validate_experiment(base, "bench", over)
    objective = TrialObjective(exp, trials, evaluate_fn=cheap_evaluate) if cheap else None
    run_optuna_search(exp, show_progress=False, objective=objective)
    study = open_study(name, exp.storage_url)
    frame = trials_frame(study)
    if time_budget is not None:  # evidence that the cheap rung ranks: its accuracy against chance
        from nas.schedulers.rungs import first_per_arch, trials_per_rung

        trials = [t for t in study.get_trials(deepcopy=False) if t.state.name != "FAIL"]
        first = [float(t.user_attrs["rung_1"]["accuracy"]) for t in first_per_arch(trials, 1)] if exp.fidelity else \
            [float(t.user_attrs["accuracy"]) for t in trials if isinstance(t.user_attrs.get("accuracy"), float)]
        frame.attrs["first_accuracy_median"] = statistics.median(first) if first else float("nan")
        frame.attrs["per_rung"] = trials_per_rung(study) if exp.fidelity else {}
        frame.attrs["continued"] = sum("continues" in t.user_attrs for t in trials)
    return frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default=None, help="YAML experiment to start from (default: built-in)")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--samplers", default="random,tpe,nsga2")
    ap.add_argument("--cheap", action="store_true", help="NASWOT zero-cost score instead of proxy training")
    ap.add_argument("--time-budget", type=float, default=None, metavar="S",
                    help="equal wall time S per method and seed (training mode); enables method mf")
    ap.add_argument("--workdir", default=None, help="where studies go (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import optuna
    import pandas as pd

    from nas.analysis.front import dominates, feasible_trials, hypervolume, reference_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base = dict(BASE)
    if args.experiment:
        import yaml

        base = yaml.safe_load(Path(args.experiment).read_text())
        base.setdefault("latency", {"backend": "none"})
    elif args.time_budget is not None:
        base.update(TIMED)
    if args.cheap:
        base["objectives"] = ["accuracy", "mmacs"]
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if "mf" in samplers and (args.time_budget is None or args.cheap):
        print("--samplers mf needs --time-budget S (training mode: equal CPU time)", file=sys.stderr)
        return 2
    if "random" not in samplers:
        samplers.insert(0, "random")
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="shufflenas_bench_"))
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    seconds: dict[tuple[str, int], float] = {}
    for seed in seeds:  # seed by seed, methods interleaved: machine noise hits every method alike
        for s in samplers:
            t0 = time.perf_counter()
            frames[(s, seed)] = run_one(base, s, seed, args.trials, workdir, args.cheap, args.time_budget)
            seconds[(s, seed)] = time.perf_counter() - t0
            print(f"  {s} seed {seed}: {len(frames[(s, seed)])} trials in {seconds[(s, seed)]:.1f} s",
                  file=sys.stderr)

    objectives = list(base.get("objectives", ["accuracy", "mmacs"]))
    any_df = next(iter(frames.values()))
    directions = [dict(zip(any_df.attrs["objectives"], any_df.attrs["directions"], strict=True))[o]
                  for o in objectives]
    budget = any_df.attrs.get("budget", {})
    union = pd.concat([feasible_trials(f, objectives) for f in frames.values()], ignore_index=True)
    ref: list[float] = []
    for o, d in zip(objectives, directions, strict=True):
        if o == "mmacs" and "max_mmacs" in budget:
            ref.append(float(budget["max_mmacs"]))
            continue
        lo, hi = float(union[o].min()), float(union[o].max())
        pad = 0.1 * (hi - lo) or 1e-9
        ref.append(lo - pad if d == "maximize" else hi + pad)
    hv = {k: hypervolume(feasible_trials(f, objectives)[objectives], directions, ref) for k, f in frames.items()}
    rnd = statistics.mean(hv[("random", s)] for s in seeds)
    rnd_med = statistics.median(hv[("random", s)] for s in seeds)
    result: dict[str, Any] = {
        "accuracy_proxy": "NASWOT zero-cost score (--cheap)" if args.cheap else "proxy training (objectives.accuracy)",
        "trials": args.trials, "time_budget_s": args.time_budget, "seeds": seeds, "budget": budget, "objectives": objectives, "reference_point": ref,
        "workdir": str(workdir), "samplers": {},
    }
    for s in samplers:
        vals = [hv[(s, seed)] for seed in seeds]
        result["samplers"][s] = {
            "hypervolume": vals, "mean": statistics.mean(vals),
            "ratio_to_random": statistics.mean(vals) / rnd if rnd else float("nan"),
            "median_ratio_to_random": statistics.median(vals) / rnd_med if rnd_med else float("nan"),
            # spread: each seed against random on the same seed
            "seed_ratios": [hv[(s, seed)] / hv[("random", seed)] if hv[("random", seed)] else float("nan")
                            for seed in seeds],
            "seconds": [round(seconds[(s, seed)], 1) for seed in seeds],
            "complete_trials": [len(feasible_trials(frames[(s, seed)], objectives)) for seed in seeds],
            # median accuracy of every candidate's first evaluation (rung 1 for mf, the full budget otherwise)
            "first_accuracy_median": [frames[(s, seed)].attrs.get("first_accuracy_median") for seed in seeds],
            "archs_per_rung": [frames[(s, seed)].attrs.get("per_rung") for seed in seeds],
            "continued": [frames[(s, seed)].attrs.get("continued") for seed in seeds],
        }
    if "mf" in samplers:
        mf = result["samplers"]["mf"]["median_ratio_to_random"]
        tpe = result["samplers"].get("tpe", {}).get("median_ratio_to_random")
        ok = mf >= 1.1 and (tpe is None or mf > tpe)
        result["goal"] = {"text": "multi-fidelity >= 1.1x random and above single-fidelity TPE (median HV)",
                          "mf_ratio": mf, "tpe_ratio": tpe, "passed": ok}
    presets: dict[str, dict[str, Any]] = {}
    for (s, _seed), f in frames.items():
        refs = reference_trials(f, objectives)
        pts = feasible_trials(f, objectives)[objectives].to_numpy()
        for _, r in refs.iterrows():
            name = r["reference_preset"]
            entry = presets.setdefault(name, {"values": {o: float(r[o]) for o in objectives}, "dominated_by": {}})
            hit = any(dominates(p, [r[o] for o in objectives], directions) for p in pts)
            entry["dominated_by"].setdefault(s, []).append(bool(hit))
    result["presets"] = presets
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    size = f"{args.time_budget:g} s each" if args.time_budget else f"{args.trials} trials"
    print(f"search quality: {size} x seeds {seeds}, budget {budget}, accuracy = {result['accuracy_proxy']}")
    print(f"hypervolume reference point: {dict(zip(objectives, ref, strict=True))}")
    for s, r in result["samplers"].items():
        hvs = ", ".join(f"{v:.4g}" for v in r["hypervolume"])
        spread = ", ".join(f"{v:.2f}" for v in r["seed_ratios"])
        print(f"  {s:7s} HV mean {r['mean']:.4g} ({hvs})  ratio to random {r['ratio_to_random']:.3f} "
              f"(median {r['median_ratio_to_random']:.3f}; per seed {spread}; full-budget trials "
              f"{r['complete_trials']})")
        if args.time_budget is not None:
            accs = ", ".join(f"{a:.3f}" for a in r["first_accuracy_median"] if a is not None)
            line = f"          median accuracy of {'rung 1' if s == 'mf' else 'a trial'} per seed: {accs} " + ("(chance 0.100)" if not args.experiment else "")
            if s == "mf":
                line += (f"; architectures per rung {[list(d.values()) for d in r['archs_per_rung']]}; "
                         f"paused trials promoted later {r['continued']}")
            print(line)
    if "goal" in result:
        g = result["goal"]
        tpe = f"{g['tpe_ratio']:.3f}" if g["tpe_ratio"] is not None else "not run"
        print(f"  {'PASS' if g['passed'] else 'FAIL'}: {g['text']}: mf {g['mf_ratio']:.3f}x, tpe {tpe}x")
    for name, e in presets.items():
        vals = ", ".join(f"{k}={v:.4g}" for k, v in e["values"].items())
        doms = "; ".join(f"{s}: {sum(v)}/{len(v)} seeds" for s, v in e["dominated_by"].items())
        print(f"  preset {name} ({vals}) dominated by a searched arch in {doms}")
    if not presets:
        print("  no reference presets in the studies (none fit the budget?)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
