"""`shufflenas export`: chosen trials as a standalone torch-only model.py, arch.json, ONNX, weights."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export trials as standalone PyTorch model files (+ arch JSON, ONNX, weights)",
        description=(
            "Write model.py (imports only torch; same state_dict keys as the search's model), arch.json and "
            "optionally model.onnx and the proxy-trained weights for one trial, a picked trial or every "
            "Pareto trial. Without --weights the deploy architecture is exported (the input the budget "
            "refers to); with --weights the proxy architecture the weights were trained for."
        ),
    )
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/STUDY/study.db)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, default=None, metavar="N", help="export trial number N")
    which.add_argument(
        "--pick", default=None, metavar="WHAT",
        help='knee, max-accuracy, min-latency, min-mmacs, or a constraint such as "latency_ms<=20" '
             "(the most accurate COMPLETE trial satisfying it)",
    )
    which.add_argument("--all-pareto", action="store_true", help="one subfolder trial_N per Pareto trial")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--objectives", default=None, help="objectives for the front/knee (default: the study's)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (single file, opset 17)")
    p.add_argument("--weights", action="store_true",
                   help="copy the proxy-trained weights (weights.safetensors, state_dict.pt); exports the proxy arch")
    p.add_argument("--deploy", action="store_true", help="export the deploy arch (default without --weights)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.common import UserError
    from nas.export import export_trial, pick_trials
    from nas.pareto import pareto_info
    from nas.results import default_storage, open_study, trials_frame

    if args.weights and args.deploy:
        raise UserError("--weights and --deploy exclude each other: the weights are trained for the proxy input")
    storage = args.storage or default_storage(args.study)
    study = open_study(args.study, storage)
    df = trials_frame(study)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()] if args.objectives else None
    try:
        info = pareto_info(df, objectives)
    except ValueError as e:
        raise UserError(f"argument --objectives: {e}") from None
    choices = pick_trials(df, info, trial=args.trial, pick=args.pick, all_pareto=args.all_pareto)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"argument --out: {out} exists and is not a folder")
    if args.weights:  # check every trial first: no half-written --all-pareto export
        from nas.export import weights_for

        for ch in choices:
            weights_for(study, storage, df, ch.number, required=True)
    results = []
    for ch in choices:
        dest = out / f"trial_{ch.number}" if args.all_pareto else out
        results.append(
            export_trial(study, storage, df, ch.number, dest, reason=ch.reason, weights=args.weights,
                         onnx=args.onnx, deploy=args.deploy, objectives=info.objectives)
        )
    if args.json:
        import json

        print(json.dumps({"study": args.study, "exports": results}, indent=2, default=str))
        return 0
    from rich.console import Console

    con = Console(width=None if Console().is_terminal else 140)
    for r in results:
        objs = ", ".join(f"{k}={v:.4g}" for k, v in r["objectives"].items())
        con.print(f"trial {r['trial']} ({r['reason']}; {r['exported']} arch {r['arch_id']}): {objs}")
        con.print(f"  wrote {', '.join(r['files'])} to {r['out']}")
    return 0
