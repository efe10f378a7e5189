"""`shufflenas resume`: continue a search until it has the trials it asked for."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "resume",
        help="continue an interrupted search (the experiment is read back from the study)",
        description="Continue study STUDY: failed/killed trials are retried and trials are run until the "
        "originally requested number (or --trials) is COMPLETE+PRUNED.",
    )
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--storage", help="storage URL (default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--run-dir", help="run directory (default runs/STUDY)")
    p.add_argument("--trials", type=int, help="total number of COMPLETE+PRUNED trials wanted")
    p.add_argument("--workers", type=int, help="worker processes on this machine (Ray: concurrent trials)")
    p.add_argument("--ray-address", help="Ray cluster address (default: the one the search used, if any)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.cli.args import UserError, positive_int
    from nas.cli.commands.search import run_experiment, setup_logging
    from nas.experiment import Experiment, ExperimentError, validate_experiment
    from nas.storage import default_storage, open_study

    url = default_storage(args.study, args.storage, args.run_dir)
    study = open_study(args.study, url, read_only=False)
    stored = study.user_attrs.get("experiment")
    if not isinstance(stored, dict):
        raise UserError(f"study {args.study!r} has no stored experiment (not created by shufflenas search)")
    target = positive_int("--trials", args.trials) if args.trials is not None else int(
        study.user_attrs.get("n_trials") or stored.get("search", {}).get("n_trials", 1))
    d = Experiment.from_stored(stored).model_dump(mode="json")
    over = {"search.storage": url, "search.study_name": args.study, "search.n_trials": target,
            "search.run_dir": args.run_dir or d["search"].get("run_dir") or f"runs/{args.study}",
            "search.workers": args.workers, "search.ray_address": args.ray_address}
    try:
        exp = validate_experiment(d, f"study {args.study}", over)
    except ExperimentError as e:
        raise UserError(str(e)) from None
    setup_logging()
    return run_experiment(exp, as_json=args.json, show_progress=not args.no_progress, target=target,
                          resume=True)
