"""Does an experiment's proxy rank the ShuffleNet v1 paper's networks as ImageNet training does?

Trains the paper's Table 2 + 3 networks (21; `--widths` for a subset) with the experiment's
own proxy through `shufflenas fidelity`'s runner (a fresh cache unless `--cache`, so the CPU
time is measured), and prints Kendall tau with its bootstrap interval beside MACs, params
and the zero-cost scores, with the goals as pass / FAIL:

- tau >= 0.8 against the paper's top-1;
- the proxy's tau above every free baseline's (else its training time buys nothing);
- "shuffle helps" in >= 5 of the 6 Table 3 pairs (when the subset has all six).

    python bench/proxy_fidelity.py                                   # quickstart, all 21 networks
    python bench/proxy_fidelity.py --widths 0.25,0.5 --json          # a subset (14 networks)
    python bench/proxy_fidelity.py --experiment experiments/shuffle_ablation.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAU_GOAL = 0.8
SHUFFLE_GOAL = 5


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    ap.add_argument("--reference", default="shufflenet_v1_imagenet")
    ap.add_argument("--widths", default=None, help="comma-separated width tags to keep, e.g. 0.25,0.5 (default all)")
    ap.add_argument("--cache", default=None, help="result cache folder (default: a fresh temporary one)")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    args = ap.parse_args(argv)

    from nas.analysis.fidelity_run import run_fidelity
    from nas.experiment import load_experiment
    from objectives.ranking import load_reference

    exp = load_experiment(args.experiment)
    ref = load_reference(args.reference)
    if args.widths:
        keep = {float(w) for w in args.widths.split(",")}
        ref = ref.subset([e.id for e in ref.entries if float(e.tags.get("width", -1)) in keep])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_fidelity(exp, ref, cache_dir=Path(args.cache) if args.cache else Path(tmp))
    wall = time.perf_counter() - t0
    p = run.proxy
    best_base = max((f for f in run.baselines() if f.tau == f.tau), key=lambda f: f.tau, default=None)
    goals = {
        "tau": {"value": p.tau, "goal": f">= {TAU_GOAL}", "pass": p.tau >= TAU_GOAL},
        "beats_baselines": {"value": p.tau, "goal": f"> best free baseline ({best_base.name if best_base else '-'} "
                            f"{best_base.tau:.3f})" if best_base else "> baselines",
                            "pass": not run.beaten_by()},
    }
    if p.shuffle_pairs == 6:
        goals["shuffle_helps"] = {"value": p.shuffle_right, "goal": f">= {SHUFFLE_GOAL} of 6",
                                  "pass": p.shuffle_right >= SHUFFLE_GOAL}
    out = {**run.to_dict(), "wall_s": wall, "goals": goals, "experiment_file": args.experiment}
    if args.json:
        print(json.dumps(out, default=lambda v: None))
        return 0
    print(f"{run.experiment}: {p.n} networks of {ref.name}, proxy CPU {run.cpu_s / 60:.1f} min, wall {wall / 60:.1f} min")
    print(f"{'signal':12} {'tau':>6} {'95% interval':>16} {'rho':>6} {'shuffle':>8} {'groups':>7}")
    for f in run.figures:
        print(f"{f.name:12} {f.tau:6.3f} [{f.tau_low:6.3f}, {f.tau_high:6.3f}] {f.rho:6.3f} "
              f"{f.shuffle_right:>3}/{f.shuffle_pairs:<4} {f.group_right:>3}/{f.group_pairs:<3}")
    for name, g in goals.items():
        print(f"goal {name}: {g['value']} (goal {g['goal']}): {'pass' if g['pass'] else 'FAIL'}")
    print(run.verdict())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
