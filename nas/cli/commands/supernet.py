"""`shufflenas supernet train`: train an experiment's weight-sharing supernet (objective oneshot_accuracy)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "supernet",
        help="train the weight-sharing supernet that objective oneshot_accuracy scores candidates with",
        description="One-shot NAS: train one supernet over the experiment's space (paths only from its budget), "
        "then `shufflenas search` scores each candidate by its inherited weights.",
    )
    ssub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    t = ssub.add_parser(
        "train",
        help="train (or resume) the supernet of EXPERIMENT.yaml's space, data and oneshot recipe",
        description="Trains on the experiment's proxy data for oneshot.steps steps with oneshot.sampler "
        "(uniform or sandwich), checkpointing every oneshot.checkpoint_every steps to "
        "RUN_DIR/supernet/<family>-<hash of space, data, recipe>.safetensors; a killed run resumes from there.",
    )
    t.add_argument("experiment", metavar="EXPERIMENT.yaml")
    t.add_argument("--steps", type=int, help="training steps (oneshot.steps)")
    t.add_argument("--sampler", help="uniform or sandwich (oneshot.sampler)")
    t.add_argument("--run-dir", help="where the supernet goes (default runs/STUDY; search.run_dir)")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def run_train(args: argparse.Namespace) -> int:
    from nas.cli.args import UserError, positive_int
    from nas.experiment import load_experiment
    from nas.pipeline.evaluate import proxy_data
    from nas.pipeline.supernets import supernet_checkpoint
    from objectives.flops import analytic_macs
    from objectives.oneshot import SupernetUnavailable, supernet_module, train_supernet

    if args.steps is not None:
        positive_int("--steps", args.steps)
    exp = load_experiment(args.experiment, {"oneshot.steps": args.steps, "oneshot.sampler": args.sampler,
                                            "search.run_dir": args.run_dir})
    space = exp.build_space()
    config = exp.oneshot_recipe.to_config()
    try:
        supernet_module(space)
    except SupernetUnavailable as e:
        raise UserError(f"{args.experiment}: space.family: {e}") from None
    path, key = supernet_checkpoint(exp)
    data = proxy_data(exp)
    hw = exp.deploy.shape[1:]

    def size(arch: object) -> float:
        return float(analytic_macs(arch, hw))

    show = not (args.json or args.no_progress)
    try:
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("[bold]supernet"), BarColumn(), MofNCompleteColumn(), TextColumn("steps ETA"),
                          TimeRemainingColumn()) as bar:
                task = bar.add_task("", total=config.steps)
                result = train_supernet(space, exp.fits, data, config, path, key, size=size,
                                        progress=lambda done, total: bar.update(task, completed=done, total=total))
        else:
            result = train_supernet(space, exp.fits, data, config, path, key, size=size)
    except SupernetUnavailable as e:
        raise UserError(f"{args.experiment}: {e}") from None
    trained = result.resumed_from < result.steps  # False: the checkpoint was already complete
    out = {"supernet": str(result.path), "key": result.key, "steps": result.steps, "sampler": config.sampler,
           "group_sharing": config.group_sharing, "resumed_from": result.resumed_from,
           "seconds": round(result.seconds, 2), "mean_loss": result.mean_loss if trained else None}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not trained:
        print(f"supernet already trained ({result.steps} steps): {result.path}")
        return 0
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    print(f"supernet trained: {result.steps} steps ({config.sampler}{resumed}) in {result.seconds:.1f} s, "
          f"mean loss {result.mean_loss:.3f}")
    print(f"checkpoint: {result.path}")
    print(f"next: shufflenas search {args.experiment}   (objectives: [oneshot_accuracy, ...])")
    return 0
