"""`shufflenas search`: run a multi-objective search described by an experiment YAML."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.experiment import Experiment


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run a multi-objective architecture search from an experiment YAML",
        description="Run (or continue, with the same --study) the search described by EXPERIMENT.yaml. "
        "Flags override the file's values.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--trials", type=int, help="number of COMPLETE+PRUNED trials (search.n_trials)")
    p.add_argument("--timeout", type=float, help="stop starting trials after S seconds (search.timeout)")
    p.add_argument("--backend", choices=("optuna", "ray"), help="search backend (search.backend)")
    p.add_argument("--sampler", help="tpe, nsga2, nsga3 or random (search.sampler)")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql+psycopg2://user@host/db "
                   "(default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--study", help="study name (default: the experiment's name)")
    p.add_argument("--workers", type=int, help="worker processes on this machine (search.workers)")
    p.add_argument("--ray-address", help="Ray cluster address for --backend ray (default: local Ray)")
    p.add_argument("--run-dir", help="where study.db, weights and caches go (default runs/STUDY)")
    p.add_argument("--seed", type=int, help="sampler seed (search.seed)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one log line per trial)")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The flags as dotted experiment keys; a flag's own bad value is its error, not the YAML file's."""
    from nas.cli.args import UserError, positive_int

    for flag, value in (("--trials", getattr(args, "trials", None)), ("--workers", getattr(args, "workers", None))):
        if value is not None:
            positive_int(flag, value)
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not timeout > 0:
        raise UserError(f"argument --timeout: must be > 0 seconds, got {timeout:g}")
    return {
        "search.n_trials": getattr(args, "trials", None),
        "search.timeout": getattr(args, "timeout", None),
        "search.backend": getattr(args, "backend", None),
        "search.sampler": getattr(args, "sampler", None),
        "search.storage": getattr(args, "storage", None),
        "search.study_name": getattr(args, "study", None),
        "search.workers": getattr(args, "workers", None),
        "search.ray_address": getattr(args, "ray_address", None),
        "search.run_dir": getattr(args, "run_dir", None),
        "search.seed": getattr(args, "seed", None),
    }


def setup_logging() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("nas").setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    from nas.experiment import load_experiment

    exp = load_experiment(args.experiment, overrides_from_args(args))
    setup_logging()
    return run_experiment(exp, as_json=args.json, show_progress=not args.no_progress, source=args.experiment)


def run_experiment(exp: Experiment, *, as_json: bool = False, show_progress: bool = True, target: int | None = None,
                   resume: bool = False, source: str = "EXPERIMENT.yaml") -> int:
    """Run or continue `exp` on its backend, then say where the results are and what to run next."""
    from nas.pipeline.supernets import require_supernet

    require_supernet(exp, source)  # before any study is created: a one-shot study needs its supernet
    from nas.analysis.summary import summarize
    from nas.backends.optuna_search import run_optuna_search
    from nas.cli.args import UserError
    from nas.storage import redact

    if exp.search.backend == "ray":
        try:
            from nas.backends.ray_search import run_ray_search
        except ImportError as e:
            raise UserError(f"search.backend: ray is not available ({e}); install shufflenas[ray]") from None
        url = run_ray_search(exp, ray_address=exp.search.ray_address, resume=resume, target=target)
        import optuna

        study = optuna.load_study(study_name=exp.study_name, storage=url)
        summary = summarize(study, target or exp.search.n_trials, exp.search.workers)
        summary.run_dir = str(exp.run_dir)
    else:
        summary = run_optuna_search(exp, target=target, show_progress=show_progress)
    url = redact(exp.storage_url)
    if as_json:
        print(json.dumps({**summary.to_dict(), "storage": url}, indent=2))
        return 0
    from nas.cli.progress import describe_best

    c = summary.counts
    refs = len(exp.reference_presets)
    print(f"study {exp.study_name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed "
          f"(target {summary.target} candidates{f', beside {refs} reference preset(s)' if refs else ''})")
    print(f"best of each objective (separate trials): {describe_best(summary.best, summary.best_trial)}")
    if summary.feasible_share is not None:
        print(f"feasible share (within budget): {summary.feasible_share:.0%}")
    print(f"results: {url}  (run dir {exp.run_dir})")
    import optuna

    from nas.cli.commands.status import gpu_figures, gpu_line

    gpu = gpu_figures(optuna.load_study(study_name=exp.study_name, storage=exp.storage_url))
    if gpu:  # images/s per trial and trials per GPU, where trials trained on one
        print(gpu_line(gpu))
    from nas.analysis.fidelity_run import search_note

    note = search_note(exp)
    if note:
        print(note)
    print("next:")
    print(f"  shufflenas pareto {exp.study_name} --storage {url}")
    print(f"  shufflenas export {exp.study_name} --storage {url} --pick knee --out exported/")
    return 0
