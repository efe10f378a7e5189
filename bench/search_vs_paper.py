"""Does the network a search picks beat the paper's own once both are trained properly?

Why: a NAS framework earns its keep only if, on the user's data and budget, its pick beats the
hand-designed network at full training -- not at the proxy the search optimised. On
Fashion-MNIST under the quickstart's 40 MMACs budget (experiments/fashion_mnist.yaml):

1. one search per signal the project offers -- NASWOT at initialisation, the short proxy
   training, and random search (sampler random, short proxy) as the control -- each optimising
   (signal, MMACs) with the same trial count and seed; and the one-shot signal
   (experiments/fashion_mnist_oneshot.yaml: a supernet trained once, then NSGA-II over 10x the
   trials, which its cheap candidates afford; its space adds group count 1), whose supernet is
   reused from bench/oneshot.py --fashion's --work when there, else trained here;
2. from each study, the knee of its front and its best-signal network under the budget;
3. each of those retrained stand-alone with the reference recipe of bench/fashion_reference.py
   (the same `evaluate` path, the same per-run results folder, so the presets' seeds the
   reference set trained are reused), over --seeds, beside every paper preset under the
   budget trained the same way;
4. MMACs, params and drift-aware latency (the experiment's latency section, ONNX Runtime, one
   thread) of every network.

Verdict per picked network against the best preset under the budget (highest mean accuracy):
it DOMINATES when its mean accuracy is at least the preset's with latency at least 10% lower,
or at least 1 point higher at no more latency. A miss is printed as a miss, with the figures.

    nice -n 5 python bench/search_vs_paper.py                   # full profile: 30 trials, 3 seeds
    python bench/search_vs_paper.py --profile smoke --json      # minutes: 4 trials, 1 seed, tiny recipe
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "fashion_mnist.yaml"
LATENCY_GAIN = 0.10  # "at least 10% lower latency"
ACC_GAIN = 1.0  # "or at least 1 point more accurate"

#: signal -> (objectives of the search, sampler); the proxy's recipe is the experiment's own
SIGNALS: dict[str, tuple[list[str], str]] = {
    "naswot": (["naswot", "mmacs"], "tpe"),
    "proxy": (["accuracy", "mmacs"], "tpe"),
    "random": (["accuracy", "mmacs"], "random"),
    "oneshot": (["oneshot_accuracy", "mmacs"], "nsga2"),
}
ONESHOT = ROOT / "experiments" / "fashion_mnist_oneshot.yaml"
ONESHOT_TRIALS = 10  # x the profile's trials: a one-shot candidate costs about a second, a proxy one ~10
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"trials": 30, "seeds": [0, 1, 2], "recipe": {}},
    # the pipeline end to end in minutes: nothing it prints is evidence
    "smoke": {"trials": 4, "seeds": [0], "recipe": {"data": {"train_size": 400, "val_size": 200},
                                                      "train": {"epochs": 1}},
              "experiment": {"data.train_size": 300, "data.val_size": 100, "train.epochs": 1,
                             "latency.min_time_s": 0.02, "latency.repeats": 3},
              "oneshot": {"oneshot.steps": 20, "data.train_size": 300, "data.val_size": 100}},
}


def search(signal: str, trials: int, work: Path, overrides: dict[str, Any],
           oneshot_overrides: dict[str, Any] | None = None) -> Any:
    """Run (or resume) one study; its trials frame."""
    import yaml

    from nas.analysis.frame import trials_frame
    from nas.backends.optuna_search import run_optuna_search
    from nas.experiment import validate_experiment
    from nas.storage import open_study

    objectives, sampler = SIGNALS[signal]
    source = ONESHOT if signal == "oneshot" else EXPERIMENT
    raw = yaml.safe_load(source.read_text())
    over = {**overrides, "objectives": objectives, "latency.backend": "none", "zero_cost": False,
            "search.sampler": sampler, "search.seed": 0, "search.workers": 1,
            "search.n_trials": trials * (ONESHOT_TRIALS if signal == "oneshot" else 1),
            "search.study_name": signal, "search.run_dir": str(work / "search" / signal), "reference_presets": []}
    if signal == "oneshot":
        over = {k: v for k, v in over.items() if not k.startswith(("train.", "data."))} | {"search.workers": 2} \
            | (oneshot_overrides or {})
    exp = validate_experiment(raw, str(source), over)
    if signal == "oneshot":
        supernet(exp)
    run_optuna_search(exp, show_progress=False)
    return trials_frame(open_study(signal, exp.storage_url))


def supernet(exp: Any) -> None:
    """The one-shot study's supernet: bench/oneshot.py --fashion's when it trained this one, else trained now."""
    import shutil

    from nas.pipeline.evaluate import proxy_data
    from nas.pipeline.supernets import supernet_checkpoint
    from objectives import oneshot
    from objectives.flops import analytic_macs

    path, key = supernet_checkpoint(exp)
    theirs = ROOT / "runs" / "oneshot_fashion" / "supernet" / path.name
    if not path.exists() and theirs.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(theirs, path)
    hw = exp.deploy.shape[1:]
    oneshot.train_supernet(exp.build_space(), exp.fits, proxy_data(exp), exp.oneshot_recipe.to_config(), path, key,
                           size=lambda a: float(analytic_macs(a, hw)))  # a no-op when trained to its steps


def picks(frame: Any) -> dict[str, Any]:
    """{"knee": arch, "best": arch} of a study: its front's knee and its best signal under the budget."""
    from nas.analysis.front import feasible_trials, knee_point, pareto_front
    from search_spaces import Arch

    objectives = list(frame.attrs["objectives"])
    directions = list(frame.attrs["directions"])
    ok = feasible_trials(frame, objectives)
    if ok.empty:
        return {}
    front = pareto_front(ok, objectives, directions)
    knee = knee_point(front, objectives, directions)
    best = ok.sort_values([objectives[0], "number"], ascending=[False, True]).iloc[0]
    by_number = ok.set_index("number")
    out = {"best": Arch.from_json(best["arch"])}
    if knee is not None:
        out["knee"] = Arch.from_json(by_number.loc[knee, "arch"])
    return out


def latency_ms(arch: Any, work: Path, overrides: dict[str, Any]) -> dict[str, float]:
    """MMACs, params (M) and drift-aware latency (ms) through `evaluate`, training nothing."""
    import yaml

    from nas.experiment import validate_experiment
    from nas.pipeline.evaluate import evaluate

    raw = yaml.safe_load(EXPERIMENT.read_text())
    over = {**overrides, "objectives": ["mmacs", "latency_ms"], "zero_cost": False, "reference_presets": [],
            "search.run_dir": str(work / "latency")}
    exp = validate_experiment(raw, str(EXPERIMENT), over)
    a = evaluate(arch, exp, run_dir=work / "latency").attrs
    return {"mmacs": float(a["mmacs"]), "params_m": a["n_params"] / 1e6, "latency_ms": float(a["latency_ms"])}


def verdict(net: dict[str, Any], preset: dict[str, Any]) -> str:
    """DOMINATES / miss against the best preset, by the issue's two rules."""
    da, lat, plat = net["acc_mean"] - preset["acc_mean"], net["latency_ms"], preset["latency_ms"]
    if da >= 0 and lat <= (1 - LATENCY_GAIN) * plat:
        return f"DOMINATES (accuracy {da:+.2f} points, latency {100 * (lat / plat - 1):+.0f}%)"
    if da >= ACC_GAIN and lat <= plat:
        return f"DOMINATES (accuracy {da:+.2f} points at {100 * (lat / plat - 1):+.0f}% latency)"
    return f"miss (accuracy {da:+.2f} points, latency {100 * (lat / plat - 1):+.0f}%)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--signals", default=",".join(SIGNALS), help=f"comma-separated, of {', '.join(SIGNALS)}")
    ap.add_argument("--trials", type=int, default=None, help="trials per search (default: the profile's)")
    ap.add_argument("--seeds", default=None, help="retraining seeds (default: the profile's; full 0,1,2)")
    ap.add_argument("--work", default=None,
                    help="results folder, resumable (default runs/search_vs_paper; smoke: a temporary folder)")
    ap.add_argument("--reference-work", default=str(ROOT / "runs" / "fashion_reference"),
                    help="bench/fashion_reference.py's --work, whose preset runs are reused")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    args = ap.parse_args(argv)

    import optuna
    import yaml

    from bench.fashion_reference import RECIPE, run_dir, trained
    from objectives.flops import analytic_macs
    from search_spaces import preset

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    prof = PROFILES[args.profile]
    budget = float(yaml.safe_load(EXPERIMENT.read_text())["budget"]["max_mmacs"])
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    bad = [s for s in signals if s not in SIGNALS]
    if bad or not signals:
        print(f"search_vs_paper: --signals {args.signals!r}: unknown {bad}; known {', '.join(SIGNALS)}",
              file=sys.stderr)
        return 2
    trials = args.trials or prof["trials"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(prof["seeds"])
    recipe = json.loads(json.dumps(RECIPE))
    for sect, vals in prof["recipe"].items():
        recipe[sect].update(vals)
    over = dict(prof.get("experiment", {}))
    tmp = tempfile.TemporaryDirectory(prefix="search-vs-paper-") if args.work is None and args.profile == "smoke" \
        else None
    work = Path(tmp.name if tmp else (args.work or ROOT / "runs" / "search_vs_paper"))
    work.mkdir(parents=True, exist_ok=True)
    runs = run_dir(args.reference_work if args.profile == "full" else work / "runs", recipe)
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    nets: dict[str, dict[str, Any]] = {}  # arch_id -> row
    search_s: dict[str, float] = {}
    for signal in signals:
        t1 = time.perf_counter()
        frame = search(signal, trials, work, over, prof.get("oneshot"))
        search_s[signal] = round(time.perf_counter() - t1, 1)
        log(f"search {signal}: {len(frame)} trials in {search_s[signal]:.0f} s (0 when resumed complete)")
        for pick, arch in picks(frame).items():
            row = nets.setdefault(arch.arch_id, {"arch": arch, "id": f"search/{arch.arch_id}", "found_by": []})
            row["found_by"].append(f"{signal} {pick}")
    presets = {}
    for g in (1, 2, 3, 4, 8):
        for w in ("0_25", "0_5"):
            a = preset(f"shufflenet_v1_g{g}_x{w}")
            if analytic_macs(a, (224, 224)) / 1e6 <= budget:  # g8 0.5x (40.5 MMACs) is out at 40
                presets[a.arch_id] = {"arch": a, "id": f"preset/g{g}_x{w}", "found_by": ["paper"]}
    for aid, row in presets.items():  # a search may find a preset itself: one row, both labels
        nets[aid] = (nets[aid] | {"id": row["id"], "found_by": nets[aid]["found_by"] + ["paper"]}) \
            if aid in nets else row
    for row in nets.values():
        accs = []
        for s in seeds:
            r, new = trained(row["id"], row["arch"], recipe, s, runs)
            accs.append(float(r["accuracy"]))
            if new:
                log(f"trained {row['id']} seed {s}: {r['accuracy']:.2f}%")
        row |= {"accs": accs, "acc_mean": statistics.fmean(accs),
                "acc_std": statistics.stdev(accs) if len(accs) > 1 else float("nan")}
        row |= latency_ms(row["arch"], work, over)
        log(f"{row['id']}: {row['acc_mean']:.2f}% {row['latency_ms']:.2f} ms")
    best_preset = max((nets[a] for a in presets), key=lambda r: r["acc_mean"])
    for row in nets.values():
        row["verdict"] = "-" if "paper" in row["found_by"] and row is best_preset else verdict(row, best_preset)
    searched = [r for r in nets.values() if any(f != "paper" for f in r["found_by"])]
    winners = sorted({f.split()[0] for r in searched if r["verdict"].startswith("DOMINATES")
                      for f in r["found_by"] if f != "paper"})
    goal = any(s != "random" for s in winners)
    doc = {"profile": args.profile, "trials": trials, "seeds": seeds, "recipe": recipe,
           "best_preset": best_preset["id"], "dominating_signals": winners,
           "goal": "a searched network dominates the best preset under the budget, for a signal other than random",
           "pass": goal, "wall_s": round(time.perf_counter() - t0, 1), "search_s": search_s,
           "networks": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k != "arch"}
                        | {"arch": r["arch"].to_dict()} for r in sorted(nets.values(), key=lambda r: -r["acc_mean"])]}
    (work / "result.json").write_text(json.dumps(doc, indent=1))
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"{'network':40s} {'found by':28s} {'MMACs':>6s} {'Mparams':>7s} {'lat ms':>7s} "
              f"{'acc mean':>8s} {'std':>5s}  verdict vs {best_preset['id']}")
        for r in doc["networks"]:
            std = "-" if r["acc_std"] is None else f"{r['acc_std']:.2f}"
            print(f"{r['id'][:40]:40s} {', '.join(r['found_by'])[:28]:28s} {r['mmacs']:6.1f} {r['params_m']:7.3f} "
                  f"{r['latency_ms']:7.2f} {r['acc_mean']:8.2f} {std:>5s}  {r['verdict']}")
        print(f"goal ({doc['goal']}): {'PASS' if goal else 'MISS'}; dominating signals: {winners or 'none'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
