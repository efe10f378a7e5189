"""`shufflenas status`: where a search stands (counts, best so far, feasible share, ETA)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a study's progress: trial counts by state, best so far, feasible share, ETA",
        description="Show the state of study STUDY without changing it.",
    )
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--storage", help="storage URL (default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--run-dir", help="run directory (default runs/STUDY)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.optuna_backend import eta_text, redact, summarize
    from nas.progress import describe_best
    from nas.results import default_storage, open_study

    url = default_storage(args.study, args.storage, args.run_dir)
    study = open_study(args.study, url)
    exp = study.user_attrs.get("experiment", {})
    workers = int(exp.get("search", {}).get("workers", 1) or 1)
    s = summarize(study, None, workers)
    d = {**s.to_dict(), "storage": redact(url), "objectives": study.metric_names,
         "backend": study.user_attrs.get("backend"), "fidelity": study.user_attrs.get("fidelity")}
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in s.counts.items() if v)
    print(f"study {s.study_name} ({d['backend'] or '?'} backend) in {redact(url)}")
    print(f"trials: {s.done} of {s.target} done ({counts or 'none yet'})")
    if s.feasible_share is not None:
        print(f"feasible share (within budget): {s.feasible_share:.0%}")
    print(f"best so far: {describe_best(s.best)}")
    if s.median_trial_s is not None:
        print(f"median trial {s.median_trial_s:.1f} s; ETA {eta_text(s.eta_s) if s.done < s.target else 'done'}")
    from nas.fidelity import describe_summary

    print(describe_summary(d["fidelity"]) or "proxy fidelity: not measured (run `shufflenas fidelity EXPERIMENT.yaml "
          f"--study {s.study_name}`)")
    return 0
