"""Framework overhead per trial: trial wall time minus the evaluation phases, median over N trials.

The experiment is MACs/params-only (no training, no latency), so a trial is almost entirely
framework: sampling, the budget gate, storage writes and the worker loop's bookkeeping.
Goal: median overhead <= 50 ms per trial on SQLite.

    python bench/search_overhead.py [--trials 200] [--sampler tpe|nsga2|random]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "nsga3", "random"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import optuna
    from optuna.trial import TrialState

    from nas.backends.optuna_search import run_optuna_search
    from nas.experiment import validate_experiment

    with tempfile.TemporaryDirectory(prefix="shufflenas-bench-") as tmp:
        exp = validate_experiment({
            "name": "overhead",
            "space": {"groups": [1, 2, 3, 4, 8], "widths": [0.25, 0.5, 0.75, 1.0], "repeats": [[1, 4], [2, 8], [1, 4]]},
            "budget": {"max_mmacs": 140},
            "objectives": ["mmacs", "params"],
            "latency": {"backend": "none"},
            "search": {"n_trials": args.trials, "sampler": args.sampler, "seed": 0, "run_dir": tmp},
        }, "bench")
        t0 = time.perf_counter()
        run_optuna_search(exp, show_progress=False)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name="overhead", storage=exp.storage_url)
        trials = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        phases = [sum(float(t.user_attrs.get(k, 0.0)) for k in ("time_macs_s", "time_latency_s", "time_train_s"))
                  for t in trials]
        inside = [t.duration.total_seconds() - p for t, p in zip(trials, phases, strict=True)]
        per_trial = wall / len(trials)
        last = inside[-50:]
        out = {
            "trials": len(trials), "sampler": args.sampler, "storage": "sqlite",
            "median_in_trial_overhead_ms": 1e3 * statistics.median(inside),
            "median_in_trial_overhead_last50_ms": 1e3 * statistics.median(last),
            "wall_per_trial_ms": 1e3 * per_trial,
            "median_eval_phases_ms": 1e3 * statistics.median(phases),
            "loop_overhead_per_trial_ms": 1e3 * (per_trial - statistics.median(phases)),
        }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['trials']} trials, sampler {args.sampler}, SQLite:")
        print(f"  median framework overhead inside a trial: {out['median_in_trial_overhead_ms']:.1f} ms "
              f"(last 50 trials {out['median_in_trial_overhead_last50_ms']:.1f} ms)")
        print(f"  wall time per trial incl. the worker loop: {out['wall_per_trial_ms']:.1f} ms "
              f"(evaluation phases {out['median_eval_phases_ms']:.2f} ms) -> overhead "
              f"{out['loop_overhead_per_trial_ms']:.1f} ms/trial (goal <= 50 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
