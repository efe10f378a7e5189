"""Trials per hour with 2 workers vs 1 on the same tiny experiment (Optuna processes, Ray Tune).

Each backend runs the experiment twice into fresh SQLite studies, with 1 and then 2 concurrent
trials, and prints trials/hour and the speed-up ratio. On a machine with fewer free cores than
workers the ratio says so (it cannot beat the cores you have).

    python bench/search_scaling.py [--backend optuna|ray|both] [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiny_experiment(run_dir: str, trials: int, workers: int, backend: str) -> Any:
    from nas.experiment import validate_experiment

    return validate_experiment({
        "name": f"scaling_{backend}_{workers}",
        "deploy": {"input": "3x64x64", "classes": 10},
        "space": {"groups": [2], "widths": [0.5], "repeats": [[1, 1], [2, 2], [1, 1]]},  # one arch: equal work per trial
        "budget": {"max_mmacs": 5},
        "objectives": ["accuracy", "mmacs"],
        "data": {"name": "default", "train_size": 1500, "val_size": 300},
        "train": {"epochs": 1, "batch_size": 50, "threads": 1},
        "latency": {"backend": "none"},
        "search": {"n_trials": trials, "sampler": "random", "seed": 0, "workers": workers, "run_dir": run_dir,
                   "backend": backend},
    }, "bench")


def run_once(backend: str, trials: int, workers: int) -> tuple[float, float]:
    """(trials/hour end to end, trials/hour steady state from the first trial start to the last end).

    End to end includes starting the worker processes (imports, data loading), which a short
    run cannot amortise; steady state is what a long search sees.
    """
    import optuna
    from optuna.trial import TrialState

    with tempfile.TemporaryDirectory(prefix="shufflenas-scaling-") as tmp:
        exp = tiny_experiment(tmp, trials, workers, backend)
        t0 = time.perf_counter()
        if backend == "optuna":
            from nas.backends.optuna_search import run_optuna_search

            run_optuna_search(exp, show_progress=False)
        else:
            from nas.backends.ray_search import run_ray_search

            run_ray_search(exp)
        wall = time.perf_counter() - t0
        study = optuna.load_study(study_name=exp.study_name, storage=exp.storage_url)
        done = [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        return trials * 3600 / wall, len(done) * 3600 / span


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("optuna", "ray", "both"), default="optuna")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    backends = ["optuna", "ray"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "trials": args.trials}
    for b in backends:
        if b == "ray":
            try:
                import nas.backends.ray_search  # noqa: F401
            except ImportError as e:
                print(f"ray backend not available ({e}); skipped", file=sys.stderr)
                continue
        (one, one_ss), (two, two_ss) = run_once(b, args.trials, 1), run_once(b, args.trials, 2)
        results[b] = {"trials_per_hour_1": one, "trials_per_hour_2": two, "ratio": two / one,
                      "steady_trials_per_hour_1": one_ss, "steady_trials_per_hour_2": two_ss,
                      "steady_ratio": two_ss / one_ss}
        if not args.json:
            print(f"{b}: end to end: 1 worker {one:.0f} trials/h, 2 workers {two:.0f} trials/h, ratio {two / one:.2f}x; "
                  f"steady state: {one_ss:.0f} vs {two_ss:.0f} trials/h, ratio {two_ss / one_ss:.2f}x "
                  f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
