"""`shufflenas export`: chosen trials as a standalone torch-only model.py, arch.json, ONNX, weights."""

from __future__ import annotations

import argparse

#: every file an export may write into its folder
EXPORT_FILES = ("model.py", "arch.json", "model.onnx", "weights.safetensors", "state_dict.pt")


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
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder; refused when it exists and is not empty, unless --force")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out: an earlier export's files there are replaced or removed")
    p.add_argument("--objectives", default=None, help="objectives for the front/knee (default: the study's)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (single file, opset 17)")
    p.add_argument("--weights", action="store_true",
                   help="copy the proxy-trained weights (weights.safetensors, state_dict.pt); exports the proxy arch")
    p.add_argument("--deploy", action="store_true", help="export the deploy arch (default without --weights)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--retrain", type=int, default=None, metavar="EPOCHS",
                   help="retrain each exported architecture for EPOCHS epochs with the search's own recipe (same "
                        "trainer) and report the retrained accuracy beside the search's proxy figure")
    p.add_argument("--retrain-reference", action="append", default=[], metavar="PRESET",
                   help="with --retrain: also retrain this paper preset (e.g. one of the study's reference_presets) in the same "
                        "budget, for comparison; repeatable")
    p.add_argument("--rung", type=int, default=None, metavar="N",
                   help="multi-fidelity studies: pick among the trials that finished rung N, by their values at "
                        "rung N (default: the highest rung a search trial reached)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nas.analysis.frame import trials_frame
    from nas.analysis.front import pareto_info
    from nas.cli.args import UserError
    from nas.deploy.standalone import export_trial, pick_trials
    from nas.storage import default_storage, open_study

    if args.weights and args.deploy:
        raise UserError("--weights and --deploy exclude each other: the weights are trained for the proxy input")
    if args.retrain is not None and args.retrain < 1:
        raise UserError(f"argument --retrain: must be an integer >= 1 epochs, got {args.retrain}")
    if args.retrain_reference and args.retrain is None:
        raise UserError("argument --retrain-reference: needs --retrain EPOCHS (the budget to retrain it in)")
    from search_spaces import PRESETS, preset

    for name in args.retrain_reference:
        if name not in PRESETS:
            try:
                preset(name)
            except ValueError as e:
                raise UserError(f"argument --retrain-reference: {e}") from None
    storage = args.storage or default_storage(args.study)
    from nas.schedulers.rungs import at_rung

    study = open_study(args.study, storage)
    df = at_rung(trials_frame(study), study, args.rung)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()] if args.objectives else None
    try:
        info = pareto_info(df, objectives)
    except ValueError as e:
        raise UserError(f"argument --objectives: {e}") from None
    choices = pick_trials(df, info, trial=args.trial, pick=args.pick, all_pareto=args.all_pareto)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"argument --out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"argument --out: {out} is not empty; give --force to write into it, or another folder")
    if args.weights:  # check every trial first: no half-written --all-pareto export
        from nas.deploy.standalone import weights_for

        for ch in choices:
            weights_for(study, storage, df, ch.number, required=True)
    results = []
    for ch in choices:
        dest = out / f"trial_{ch.number}" if args.all_pareto else out
        for name in EXPORT_FILES:  # --force: no earlier export's weights or ONNX beside this model.py
            (dest / name).unlink(missing_ok=True)
        results.append(
            export_trial(study, storage, df, ch.number, dest, reason=ch.reason, weights=args.weights,
                         onnx=args.onnx, deploy=args.deploy, objectives=info.objectives)
        )
    references = _retrain(args, study, results, out, df.attrs.get("rung")) if args.retrain is not None else []
    if args.json:
        import json

        print(json.dumps({"study": args.study, "rung": df.attrs.get("rung"), "exports": results,
                          "retrained_references": references}, indent=2, default=str))
        return 0
    from rich.console import Console

    con = Console(width=None if Console().is_terminal else 140)
    for r in results:
        objs = ", ".join(f"{k}={v:.4g}" for k, v in r["objectives"].items())
        con.print(f"trial {r['trial']} ({r['reason']}; {r['exported']} arch {r['arch_id']}): {objs}")
        con.print(f"  wrote {', '.join(r['files'])} to {r['out']}")
        if r.get("retrain"):
            rt = r["retrain"]
            con.print(f"  retrained {rt['epochs']} epochs: accuracy {rt['accuracy']:.4f} (search's proxy figure "
                      f"{_acc(rt['proxy_accuracy'])}{rt['proxy_label']}) in {rt['seconds']:.0f} s")
    for ref in references:
        con.print(f"reference {ref['preset']} retrained {ref['epochs']} epochs: accuracy {ref['accuracy']:.4f} "
                  f"({ref['mmacs']:.1f} MMACs at the deploy input) in {ref['seconds']:.0f} s")
    if df.attrs.get("rung"):
        from nas.schedulers.rungs import rung_label

        con.print(rung_label(df, (study.user_attrs.get("experiment") or {}).get("train", {}).get("epochs")))
    return 0


def _acc(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _retrain(args: argparse.Namespace, study: object, results: list[dict], out: object,
             rung: int | None) -> list[dict]:
    """--retrain: each export's architecture and each --retrain-reference preset, at EPOCHS, same recipe."""
    import json
    from pathlib import Path

    from nas.cli.args import UserError, load_arch
    from nas.deploy.standalone import retrain
    from search_spaces import Arch

    exp = study.user_attrs.get("experiment") or {}  # type: ignore[attr-defined]
    if not exp:
        raise UserError(f"argument --retrain: study {args.study!r} does not record its experiment (no recipe)")
    rung_note = f" at rung {rung}" if rung else ""
    for r in results:
        arch_file = Path(r["out"]) / "arch.json"
        meta = json.loads(arch_file.read_text())
        rt = retrain(_trial_arch(study, r["trial"]), exp, args.retrain, Path(r["out"]) / "retrain")
        rt["proxy_accuracy"] = r["objectives"].get("accuracy")
        rt["proxy_label"] = rung_note
        r["retrain"] = meta["retrain"] = rt
        arch_file.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    refs = []
    for name in args.retrain_reference:
        # the study's own evaluation of the preset (deploy-shaped) when it has one, else the preset itself
        stored = [t.user_attrs["arch"] for t in study.get_trials(deepcopy=False)  # type: ignore[attr-defined]
                  if t.user_attrs.get("reference_preset") == name and t.user_attrs.get("arch")]
        arch = Arch.from_json(stored[0]) if stored else load_arch(name)
        rt = retrain(arch.to_json(), exp, args.retrain, Path(str(out)) / "retrain_reference" / name)
        from objectives.flops import analytic_macs

        shape = (exp.get("deploy") or {}).get("input") or [3, 224, 224]
        refs.append({"preset": name, "mmacs": analytic_macs(arch, tuple(shape[1:])) / 1e6, **rt})
    return refs


def _trial_arch(study: object, number: int) -> str:
    for t in study.get_trials(deepcopy=False):  # type: ignore[attr-defined]
        if t.number == number:
            return str(t.user_attrs["arch"])
    raise KeyError(number)
