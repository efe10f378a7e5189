"""`shufflenas status`: where a search stands (counts, knee, best of each objective, feasible share, ETA)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show a study's progress: trial counts by state, knee trial, best of each objective, flagged "
             "latency trials, ETA",
        description="Show the state of study STUDY without changing it.",
    )
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--storage", help="storage URL (default sqlite:///RUN_DIR/study.db)")
    p.add_argument("--run-dir", help="run directory (default runs/STUDY)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.analysis.summary import eta_text, summarize
    from nas.cli.commands.pareto import drift_line
    from nas.cli.progress import describe_best
    from nas.schedulers.rungs import trials_per_rung
    from nas.storage import default_storage, open_study, redact
    from nas.timing.remeasure import flag_counts

    url = default_storage(args.study, args.storage, args.run_dir)
    study = open_study(args.study, url)
    exp = study.user_attrs.get("experiment", {})
    workers = int(exp.get("search", {}).get("workers", 1) or 1)
    s = summarize(study, None, workers)
    d = {**s.to_dict(), "storage": redact(url), "objectives": study.metric_names,
         "backend": study.user_attrs.get("backend"), "knee": knee(study), "train_devices": train_devices(study),
         "fidelity": study.user_attrs.get("fidelity"), "trials_per_rung": trials_per_rung(study),
         "latency_drift": flag_counts(study), "gpu": gpu_figures(study)}
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in s.counts.items() if v)
    print(f"study {s.study_name} ({d['backend'] or '?'} backend) in {redact(url)}")
    print(f"trials: {s.done} of {s.target} done ({counts or 'none yet'})")
    if d["trials_per_rung"]:
        print("trials per rung (finished): " + ", ".join(f"rung {r}: {n}" for r, n in d["trials_per_rung"].items()))
    line = drift_line(d["latency_drift"], exp)
    if line:
        print(line)
    if s.feasible_share is not None:
        print(f"feasible share (within budget): {s.feasible_share:.0%}")
    k = d["knee"]
    if k is not None:
        print(f"knee: trial {k['number']}: {describe_best(k['values'])} (one network: the Pareto point "
              f"closest to the ideal)")
    print(f"best of each objective (separate trials): {describe_best(s.best, s.best_trial)}")
    if d["train_devices"]:
        print("trained on: " + ", ".join(f"{dev} ({n} trial{'s' if n > 1 else ''})"
                                        for dev, n in d["train_devices"].items()))
    if d["gpu"]:
        print(gpu_line(d["gpu"]))
    if s.median_trial_s is not None:
        print(f"median trial {s.median_trial_s:.1f} s; ETA {eta_text(s.eta_s) if s.done < s.target else 'done'}")
    from nas.analysis.fidelity_run import describe_summary

    print(describe_summary(d["fidelity"]) or "proxy fidelity: not measured (run `shufflenas fidelity EXPERIMENT.yaml "
          f"--study {s.study_name}`)")
    return 0


def knee(study) -> dict | None:  # noqa: ANN001 - optuna.Study
    """The knee of the study's Pareto front: {"number", "values"} (None before a COMPLETE trial)."""
    from nas.analysis.frame import trials_frame
    from nas.analysis.front import pareto_info

    try:
        info = pareto_info(trials_frame(study))
    except ValueError:  # no objective values yet
        return None
    if info.knee is None:
        return None
    row = info.front[info.front["number"] == info.knee].iloc[0]
    return {"number": int(info.knee), "values": {o: float(row[o]) for o in info.objectives}}


def train_devices(study) -> dict[str, int]:  # noqa: ANN001 - optuna.Study
    """How many trials trained on each device (the `train_device` each trial records)."""
    from collections import Counter

    return dict(Counter(str(t.user_attrs["train_device"]) for t in study.get_trials(deepcopy=False)
                        if "train_device" in t.user_attrs))


def gpu_figures(study) -> dict | None:  # noqa: ANN001 - optuna.Study
    """What trials trained on a GPU recorded: trials per physical GPU, GPU names, median images/s
    per trial, and how many trials trained at once on a GPU (the experiment's setting); None when
    no trial trained on CUDA."""
    import math
    import statistics
    from collections import Counter

    rows = [t.user_attrs for t in study.get_trials(deepcopy=False)
            if str(t.user_attrs.get("train_device", "")).startswith("cuda")]
    if not rows:
        return None
    ips = [float(a["images_per_second"]) for a in rows
           if isinstance(a.get("images_per_second"), (int, float)) and math.isfinite(a["images_per_second"])]
    per_gpu = Counter(str(a.get("train_gpu", a["train_device"])) for a in rows)
    search = (study.user_attrs.get("experiment") or {}).get("search") or {}
    n, share, workers = search.get("trials_per_gpu"), search.get("gpus_per_trial") or 0, search.get("workers") or 1
    at_once = n or (int(1 / share) if share else max(1, math.ceil(workers / len(per_gpu))))
    return {"trials": len(rows), "per_gpu": dict(sorted(per_gpu.items())),
            "gpu_names": sorted({str(a["train_gpu_name"]) for a in rows if a.get("train_gpu_name")}),
            "median_images_per_s": statistics.median(ips) if ips else None, "trials_at_once_per_gpu": at_once,
            "trials_per_gpu_setting": n}


def gpu_line(g: dict) -> str:
    """One line of `gpu_figures` for people."""
    names = f" ({', '.join(g['gpu_names'])})" if g["gpu_names"] else ""
    gpus = ", ".join(f"GPU {k}: {v}" for k, v in g["per_gpu"].items())
    ips = f"; median {g['median_images_per_s']:,.0f} images/s per trial" if g["median_images_per_s"] else ""
    how = "search.trials_per_gpu" if g["trials_per_gpu_setting"] else "workers per GPU"
    return (f"GPU training: {g['trials']} trial{'s' if g['trials'] > 1 else ''} on {len(g['per_gpu'])} GPU(s){names} "
            f"({gpus}){ips}; up to {g['trials_at_once_per_gpu']} trial(s) at once per GPU ({how})")
